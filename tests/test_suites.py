"""Suite files and model cards: every built-in suite parses and plans for a real card, every
card's pipeline round-trips through its spec, and the suite-file rules (``where`` filters,
include cycles, unique condition names) fail as one-line :class:`UserError` s."""

from __future__ import annotations

import pytest

from robustbench_sys import noises, zoo
from robustbench_sys.data import load_dataset
from robustbench_sys.errors import UserError
from robustbench_sys.eval.plan import plan_units
from robustbench_sys.noises.natural import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, GROUPS, SEVERITIES
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.suites import get_suite, list_suites, resolve

SHA = "0" * 64


def _benchmark_of(suite: str) -> str:
    """The benchmark a built-in suite is written for (the MNIST ones say so in their name)."""
    return "mnist" if suite.startswith("mnist") else "imagenet"


@pytest.fixture(scope="module")
def datasets():
    """Lazily loaded data sets by benchmark; a missing one skips with the loader's reason."""
    cache: dict[str, object] = {}

    def get(benchmark: str):
        if benchmark not in cache:
            try:
                cache[benchmark] = load_dataset("mnist-test" if benchmark == "mnist" else "foolbox-demo")
            except UserError as e:
                cache[benchmark] = e
        if isinstance(cache[benchmark], UserError):
            pytest.skip(str(cache[benchmark]))
        return cache[benchmark]

    return get


def _write(path, text: str):
    path.write_text(text)
    return path


def _sweep_file(tmp_path, name: str, body: str, family: str | None = None):
    """Suite file ``<name>.toml`` sweeping the ``corrupt`` stage; ``body``: the rest of its ``[sweep]`` table."""
    head = f'name = "{name}"\n' + (f'family = "{family}"\n' if family else "")
    return _write(tmp_path / f"{name}.toml", f'{head}[sweep]\nstage = "corrupt"\n{body}\n')


def _conditions_file(tmp_path, name: str, family: str, conditions, include: tuple[str, ...] = ()):
    """Suite file ``<name>.toml`` of ``family`` listing ``conditions``, ``(name, stage, value)`` triples."""
    lines = [f'name = "{name}"', f'family = "{family}"']
    if include:
        lines.append("include = [" + ", ".join(f'"{i}"' for i in include) + "]")
    for cname, stage, value in conditions:
        lines += ["[[conditions]]", f'name = "{cname}"', f'{stage} = "{value}"']
    return _write(tmp_path / f"{name}.toml", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------- built-ins
def test_there_are_builtin_suites():
    names = list_suites()
    assert "imagenet-c" in names and "clean" in names and len(names) == len(set(names))


@pytest.mark.parametrize("name", list_suites())
def test_builtin_suite_parses_and_plans(name, datasets):
    suite = get_suite(name)
    assert suite.conditions and suite.description, f"{name}: no conditions or no description"
    names = [c.name for c in suite.conditions]
    assert len(names) == len(set(names)), f"{name}: duplicate condition names"
    assert all(c.name for c in suite.conditions)

    conditions = resolve([name])
    assert conditions[0].name == "clean"
    assert len({c.name for c in conditions}) == len(conditions)

    bench = _benchmark_of(name)
    card = zoo.get_card("mnist_lenet5_standard" if bench == "mnist" else "mobilenet_v2")
    dataset = datasets(bench)
    units, skips = plan_units(card, SHA, conditions, dataset)

    planned = [u.condition.name for u in units]
    skipped = [s.condition for s in skips]
    assert sorted(planned + skipped) == sorted(c.name for c in conditions), \
        "every condition is either a unit or a skip, exactly once"
    assert all(s.reason.strip() and "\n" not in s.reason for s in skips), skips
    assert all(s.model == card.name for s in skips)
    assert "clean" in planned and planned[0] == "clean"
    if not skipped:
        assert len(units) == len(conditions)


def test_imagenet_c_selects_the_benchmark_by_metadata():
    """The 15 corruptions x 5 severities (75) and the 4 extra (20), in the registry's order."""
    c = [x.name for x in get_suite("imagenet-c").conditions]
    e = [x.name for x in get_suite("imagenet-c-extra").conditions]
    assert c == sorted(f"natural/{n}-{s}" for n in BENCHMARK_CORRUPTIONS for s in SEVERITIES)
    assert e == sorted(f"natural-extra/natural/{n}-{s}" for n in EXTRA_CORRUPTIONS for s in SEVERITIES)
    assert len(c) == 75 and len(e) == 20
    for x in get_suite("imagenet-c").conditions:
        assert x.overrides == {"corrupt": "natural/" + x.name.split("/", 1)[1]}
    for key in noises.list_noises("natural/*"):
        tags = noises.get(key).tags
        assert tags["benchmark"] == (tags["corruption"] in BENCHMARK_CORRUPTIONS)
        assert tags["group"] in ("noise", "blur", "weather", "digital")


# ------------------------------------------------------------------------------------- zoo cards
@pytest.mark.parametrize("name", zoo.list_models("*", benchmark=None))
def test_card_pipeline_round_trips(name):
    card = zoo.get_card(name)
    assert card.name == name and card.num_classes > 0
    p = Pipeline.from_card(card)
    assert Pipeline.from_spec(p.spec()) == p
    assert Pipeline.from_spec(p.spec_json()) == p
    assert Pipeline.from_spec(p.spec()).digest == p.digest


# ------------------------------------------------------------------------------------- where
def test_where_selects_by_group(tmp_path):
    f = _sweep_file(tmp_path, "blurs", 'pattern = "natural/*"\nwhere = { group = "blur", benchmark = true }',
                    family="blurs")
    names = [c.name for c in get_suite(str(f)).conditions]
    assert names == sorted(f"blurs/natural/{n}-{s}" for n in GROUPS["blur"] for s in SEVERITIES)


def test_where_list_means_any_of_and_exclude_still_applies(tmp_path):
    f = _sweep_file(tmp_path, "mix", 'where = { group = ["noise", "weather"], severity = 3 }\n'
                                     'exclude = ["natural/frost-*"]', family="natural")
    want = sorted(f"natural/{n}-3" for n, c in _corruptions().items()
                  if c.group in ("noise", "weather") and n != "frost")
    assert [c.name for c in get_suite(str(f)).conditions] == want
    assert "natural/speckle_noise-3" in want and "natural/spatter-3" in want   # extra ones have groups too


def _corruptions():
    from robustbench_sys.noises.natural import CORRUPTIONS
    return CORRUPTIONS


@pytest.mark.parametrize("body, match", [
    ('where = { grup = "blur" }', r"bad\.toml.*unknown key 'grup'.*valid: benchmark, corruption, group, severity"),
    ('where = { group = "sky" }', r"bad\.toml.*stage 'corrupt'.*where.*matches no noise"),
    ('where = "benchmark"', r"bad\.toml.*where must be a table"),
    ('where = { group = [] }', r"bad\.toml.*non-empty list"),
    ('were = { group = "blur" }', r"bad\.toml.*\[sweep\] has unknown key\(s\) were"),
    ('where = { benchmark = 1 }', r"bad\.toml.*matches no noise"),  # a bool is not a number
])
def test_bad_where_is_a_one_line_user_error(tmp_path, body, match):
    f = _sweep_file(tmp_path, "bad", body)
    with pytest.raises(UserError, match=match) as e:
        get_suite(str(f))
    assert "\n" not in str(e.value)


def test_where_on_a_product_axis(tmp_path):
    f = _write(tmp_path / "prod.toml", """
name = "prod"
family = "prod"
[product.corrupt]
pattern = "natural/*-1"
where = { group = "digital", benchmark = false }
[product.resize]
pattern = "resize/cv2-area"
""")
    assert [c.name for c in get_suite(str(f)).conditions] == ["prod/saturate-1+cv2-area"]


# ------------------------------------------------------------------------------------- includes, names
def test_suite_including_itself_is_a_user_error(tmp_path):
    a = tmp_path / "a.toml"
    _write(a, f'name = "a"\ninclude = ["{a}"]\n')
    with pytest.raises(UserError, match=r"a\.toml: include cycle a\.toml -> a\.toml") as e:
        get_suite(str(a))
    assert "\n" not in str(e.value)


def test_include_cycle_through_the_suite_path_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTBENCH_SYS_SUITES", str(tmp_path))
    _write(tmp_path / "cyc-a.toml", 'name = "cyc-a"\ninclude = ["cyc-b"]\n')
    _write(tmp_path / "cyc-b.toml", 'name = "cyc-b"\ninclude = ["clean", "cyc-a"]\n')
    for start, chain in (("cyc-a", "cyc-a.toml -> cyc-b.toml -> cyc-a.toml"),
                         ("cyc-b", "cyc-b.toml -> cyc-a.toml -> cyc-b.toml")):
        with pytest.raises(UserError, match="include cycle " + chain.replace(".", r"\.")) as e:
            get_suite(start)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="include cycle"):
        resolve(["clean", "cyc-a"])


def test_diamond_include_is_not_a_cycle(tmp_path, monkeypatch):
    """Including the same suite twice along different branches is not a cycle (but its
    conditions then appear twice, which the unique-name rule reports)."""
    monkeypatch.setenv("ROBUSTBENCH_SYS_SUITES", str(tmp_path))
    _write(tmp_path / "d-top.toml", 'name = "d-top"\ninclude = ["d-left", "d-right"]\n')
    _write(tmp_path / "d-left.toml", 'name = "d-left"\ninclude = ["color"]\n')
    _write(tmp_path / "d-right.toml", 'name = "d-right"\ninclude = ["color"]\n')
    with pytest.raises(UserError, match=r"d-top\.toml: condition name\(s\) color/.* more than once"):
        get_suite("d-top")
    assert get_suite("d-left").conditions == get_suite("color").conditions


def test_unknown_include_names_the_including_file(tmp_path):
    f = _write(tmp_path / "inc.toml", 'name = "inc"\ninclude = ["no-such-suite"]\n')
    with pytest.raises(UserError, match=r"inc\.toml: include unknown suite 'no-such-suite'"):
        get_suite(str(f))


def test_duplicate_condition_names_are_a_user_error(tmp_path):
    f = _conditions_file(tmp_path, "dup", "sys", [("area", "resize", "cv2-area"), ("area", "resize", "pil-box")])
    with pytest.raises(UserError, match=r"dup\.toml: condition name\(s\) sys/area given more than once") as e:
        get_suite(str(f))
    assert "\n" not in str(e.value)


def test_condition_duplicated_by_an_include_is_a_user_error(tmp_path):
    first = get_suite("color").conditions[0]
    family, cname = first.name.split("/", 1)
    stage, value = next(iter(first.overrides.items()))
    f = _conditions_file(tmp_path, "twice", family, [(cname, stage, value)], include=("color",))
    with pytest.raises(UserError, match=rf"twice\.toml: condition name\(s\) {first.name} given more than once"):
        get_suite(str(f))


def test_exclude_still_works_for_user_files(tmp_path):
    f = _sweep_file(tmp_path, "ex", 'pattern = "natural/*"\nexclude = ["natural/speckle_noise-*", '
                                   '"natural/gaussian_blur-*", "natural/spatter-*", "natural/saturate-*"]',
                    family="natural")
    got = get_suite(str(f)).conditions
    want = get_suite("imagenet-c").conditions
    assert [(c.name, c.overrides) for c in got] == [(c.name, c.overrides) for c in want]


def test_unknown_key_in_a_product_table(tmp_path):
    f = _write(tmp_path / "p.toml", 'name = "p"\n[product.resize]\nstage = "resize"\npattern = "resize/cv2-*"\n')
    with pytest.raises(UserError, match=r"p\.toml: \[product\.resize\] has unknown key\(s\) stage"):
        get_suite(str(f))
