"""The Streamlit dashboard (``robustbench-sys dashboard`` runs ``app.py``); reads the results store only."""
