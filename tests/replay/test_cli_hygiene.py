"""Run hygiene of the ``tradeloop`` command (issue 13, part 3), through ``main`` in-process:
``--out`` and ``--force``, never the data, ``--strategy`` against a config's params,
``--model``, ``compare``, ``--version``, ``-v`` after the command, defaults in the help,
numeric flags, and the config's ``[columns]`` and ``[replay] start``/``end``."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from engine.strategy import Strategy
from replay.cli import _default_config_path, _load, main


class Idle(Strategy):
    """Trades nothing; takes no params (``NoParams`` refuses unknown ones): given the
    config's ``notional`` it would not load."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One symbol, 45 s: about 1,000 ticks."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    assert main(["sample-data", str(out), "--symbols", "1", "--hours", "0.0125"]) == 0
    return out


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command prints on stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tradeloop: error:")
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_existing_out_is_refused_unless_force(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["replay", str(tiny), "--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["replay", str(tiny), "--out", str(out), "--strategy", "ema_cross"]) == 2
    line = _error(capsys)
    assert "exists" in line and "--force" in line
    assert _snapshot(out) == before
    assert main(["replay", str(tiny), "--out", str(out), "--force"]) == 0
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("where", ["data", "inside", "around", "file"])
@pytest.mark.parametrize("command", ["replay", "train"])
def test_out_is_never_the_data_even_with_force(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, command: str
) -> None:
    out = {
        "data": tiny,
        "inside": tiny / "run",
        "around": tiny.parent,
        "file": tiny / "quotes.parquet",
    }[where]
    before = _snapshot(tiny.parent)
    assert main([command, str(tiny), "--out", str(out), "--force"]) == 2
    assert "is, holds or is inside the data" in _error(capsys)
    assert _snapshot(tiny.parent) == before  # nothing written, nothing removed
    # named files count as data too
    quotes = tiny / "quotes.parquet"
    assert main([command, "--quotes", str(quotes), "--out", str(quotes), "--force"]) == 2
    assert _snapshot(tiny.parent) == before


def test_train_refuses_an_existing_out(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", str(tiny), "--out", str(out)]) == 2
    assert "exists" in _error(capsys)
    assert _snapshot(out) == {"keep.txt": b"mine"}


def test_strategy_flag_does_not_get_another_strategys_params(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    text = _default_config_path().read_text()
    assert "notional = 10000.0" in text
    config.write_text(text.replace("notional = 10000.0", "notional = 1234.0"))
    out = tmp_path / "run"
    # the config's params are its own strategy's (ema_cross), not this one's
    argv = ["replay", str(tiny), "--config", str(config), "--out", str(out)]
    assert main([*argv, "--strategy", "tests.replay.test_cli_hygiene:Idle"]) == 0
    err = capsys.readouterr().err
    assert "params belong to ema_cross and were not passed (notional)" in err
    header = json.loads((out / "metrics.json").read_text())["header"]
    assert header["strategy"] == "tests.replay.test_cli_hygiene:Idle"
    assert header["strategy_params"] == {}
    assert any(
        "were not passed" in n for n in json.loads((out / "metrics.json").read_text())["data_notes"]
    )
    # the config's own strategy keeps them
    assert main([*argv, "--force"]) == 0
    params = json.loads((out / "metrics.json").read_text())["header"]["strategy_params"]
    assert params["notional"] == 1234.0


def test_model_flag_sets_the_model_folder(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "my_model"
    folder.mkdir()
    cfg, _, _ = _load(None, None, str(folder))
    # without --config the bundled ML config runs the model, with its strategy
    assert cfg.model is not None and cfg.model.path == str(folder.resolve())
    assert cfg.strategy.name == "ml_threshold"
    assert main(["replay", str(tiny), "--model", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert "--model" in _error(capsys) and not (tmp_path / "run").exists()


def test_compare_writes_one_page_with_runs_side_by_side(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "fast", tmp_path / "slow"
    assert main(["replay", str(tiny), "--out", str(a)]) == 0
    config = tmp_path / "slow.toml"
    config.write_text(
        _default_config_path().read_text().replace("[strategy]", "[strategy]\n# slow", 1)
    )
    assert main(["replay", str(tiny), "--config", str(config), "--out", str(b)]) == 0
    page = tmp_path / "cmp.html"
    assert main(["compare", str(a), str(b), "--out", str(page)]) == 0
    html = page.read_text()
    assert "<th>fast</th><th>slow</th>" in html
    # both curves in one interactive chart, each named in its legend
    assert html.count('id="chart-compare"') == 1 and html.count("Bokeh.embed.embed_item") == 1
    chart = html.split('id="chart-compare-data">', 1)[1].split("</script>", 1)[0]
    assert chart.count('"GlyphRenderer"') >= 2 and '"fast"' in chart and '"slow"' in chart
    for metrics_of in (a, b):
        m = json.loads((metrics_of / "metrics.json").read_text())
        assert m["header"]["effective_config_sha256"] in html
        assert f"<td>{m['ticks']:,}</td>" in html
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(page)]) == 2  # exists
    assert "exists" in _error(capsys)
    assert main(["compare", str(a), str(tiny), "--out", str(tmp_path / "x.html")]) == 2
    assert "not a replay run folder" in _error(capsys)
    assert not (tmp_path / "x.html").exists()


def test_version_verbose_after_the_command_and_defaults_in_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    version = capsys.readouterr().out.strip()
    expected = tomllib.loads(Path("pyproject.toml").read_text())["project"]["version"]
    assert version == f"tradeloop {expected}"
    assert main(["sample-data", str(tmp_path / "d"), "--hours", "0.001", "-v"]) == 0
    with pytest.raises(SystemExit):
        main(["sample-data", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "(default: 3)" in text and "(default: 24.0)" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["sample-data", "{tmp}/d", "--hours", "-1"],
        ["sample-data", "{tmp}/d", "--hours", "nan"],
        ["sample-data", "{tmp}/d", "--symbols", "0"],
        ["sample-data", "{tmp}/d", "--symbols", "-3"],
        ["sample-data", "{tmp}/d", "--quote-interval-ms", "0"],
        ["sample-data", "{tmp}/d", "--seed", "-1"],
        ["demo", "--out", "{tmp}/demo", "--hours", "0"],
        ["replay", "{tmp}", "--out", "{tmp}/r", "--batch-size", "-5"],
        ["replay", "{tmp}", "--out", "{tmp}/r", "--batch-size", "0"],
    ],
)
def test_numeric_flags_are_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_config_columns_and_time_range_apply_and_flags_override(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ticks(argv: list[str], name: str) -> int:
        out = tmp_path / name
        assert main(["replay", str(tiny), "--out", str(out), *argv]) == 0
        return int(json.loads((out / "metrics.json").read_text())["ticks"])

    full = ticks([], "full")
    # the 45 s of data: keep from its first whole second to second 20 of that minute
    first = json.loads((tmp_path / "full" / "metrics.json").read_text())["header"]["data_from"]
    start = first[:19]
    text = _default_config_path().read_text()
    assert "[replay]\n" in text  # start/end go into the bundled config's own table
    ranged = tmp_path / "ranged.toml"
    window = f'start = "{start}"\nend = "{start[:17]}20"\n'
    ranged.write_text(text.replace("[replay]\n", "[replay]\n" + window, 1))
    part = ticks(["--config", str(ranged)], "part")
    assert 0 < part < full
    # the flag wins over the config
    assert ticks(["--config", str(ranged), "--end", f"{start[:17]}59"], "wider") > part


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('[columns]\nmid = "m"\n', "columns.mid"),
        ('[replay]\nstart = "yesterday"\n', "replay.start"),
        ("[replay]\nend = 5\n", "replay.end"),
    ],
)
def test_bad_columns_or_time_in_the_config_is_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    text = _default_config_path().read_text()
    if extra.startswith("[replay]"):
        text = text.replace("[replay]\n", extra, 1)
    else:
        text += "\n" + extra
    config = tmp_path / "c.toml"
    config.write_text(text)
    out = tmp_path / "run"
    assert main(["replay", str(tiny), "--config", str(config), "--out", str(out)]) == 2
    assert needle in _error(capsys)
    assert not out.exists()


def test_columns_mapping_naming_no_column_is_an_error(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a typo in a mapping used to be ignored: the replay ran on the files' own columns
    code = main(["replay", str(tiny), "--out", str(tmp_path / "r"), "--columns", "bid=nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "bid=nope" in err[0] and "no tick file has such a column" in err[0]
    assert not (tmp_path / "r").exists()


def test_columns_mapping_for_the_other_kind_is_no_error(tiny: Path, tmp_path: Path) -> None:
    # a shared config maps trade columns; replaying quotes alone must not call it a typo
    quotes = str(tiny / "quotes.parquet")
    argv = ["replay", "--quotes", quotes, "--out", str(tmp_path / "r"), "--columns", "price=p"]
    assert main(argv) == 0


def test_range_past_the_data_is_an_error_not_an_empty_report(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", str(tiny), "--out", str(tmp_path / "r"), "--start", "2090-01-01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("tradeloop: error:")
    assert "no tick replayed" in err[-1] and "--start/--end" in err[-1]
    assert not (tmp_path / "r").exists()
