"""``flops --compare fvcore``: fvcore's flops beside our MACs per layer, every difference with its reason, hand
counts on small models, and docs/peers.md kept in sync (its reasons quoted, its numbers recomputed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.counting.compare import REASONS, FvcoreComparison, _differences, compare_fvcore
from profiler.kinds import SCHEMA_VERSION, FvcoreReason

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "docs" / "peers.md"
ZOO_SIX = ("alexnet", "vgg", "nin", "googlenet", "resnet", "densenet")

NETS = '''
import torch
from torch import nn


def bn_pool():
    """3×8×8 in: conv 3→4 (3×3, 6×6 out), batch norm, ReLU, adaptive average pooling, linear 4→2."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


class Attention(nn.Module):
    """3×4×4 in: a 1×1 conv to 8 channels, the 16 positions as tokens, self-attention (2 heads, no weights asked
    for, as torchvision's ViT does), mean over tokens, linear 8→2."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 1)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.head(out.mean(1))


def attention():
    return Attention()
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> str:
    folder = tmp_path_factory.mktemp("compare_nets")
    (folder / "compare_nets.py").write_text(textwrap.dedent(NETS))
    monkeypatch_module.syspath_prepend(str(folder))
    return "compare_nets"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def zoo_224() -> dict[str, FvcoreComparison]:
    return {name: compare_fvcore(name, 224) for name in ZOO_SIX}


def _row(result: FvcoreComparison, name: str):
    (row,) = [r for r in result.rows if r.name == name]
    return row


def test_batch_norm_and_adaptive_pooling_are_the_differences_by_hand(nets: str):
    result = compare_fvcore(f"{nets}:bn_pool", 8)
    conv_macs, linear_macs = 4 * 3 * 9 * 6 * 6, 4 * 2
    assert result.macs == conv_macs + linear_macs == 3_896
    assert _row(result, "0").difference == 0 and _row(result, "5").difference == 0  # fvcore's flop = our MAC
    assert [(d.reason, d.flops) for d in _row(result, "1").differences] == [(FvcoreReason.BATCH_NORM, 2 * 4 * 36)]
    assert [(d.reason, d.flops) for d in _row(result, "3").differences] == [(FvcoreReason.ADAPTIVE_POOL, 4 * 36)]
    assert result.fvcore_flops == 3_896 + 288 + 144
    assert result.by_reason == {FvcoreReason.BATCH_NORM: 288, FvcoreReason.ADAPTIVE_POOL: 144}
    assert [r.name for r in result.rows] == ["0", "1", "3", "5"]  # ReLU and Flatten: 0 in both, left out


def test_attention_products_fvcore_has_no_handle_for_are_the_difference_by_hand(nets: str):
    result = compare_fvcore(f"{nets}:attention", 4)
    tokens, dim, heads = 16, 8, 2
    projections = tokens * dim * 3 * dim + tokens * dim * dim
    products = 2 * heads * tokens * tokens * (dim // heads)  # QKᵀ and attention × V
    row = _row(result, "attention")
    assert (row.macs, row.fvcore_flops) == (projections + products, projections)
    assert [(d.reason, d.flops) for d in row.differences] == [(FvcoreReason.UNHANDLED_OP, -products)]
    assert row.unsupported_ops.get("aten::scaled_dot_product_attention") == 1


def test_einsum_rounding_is_numpys_printout_of_the_count():
    ours = 19_668_992  # one of maxvit_t's relative-position attentions
    fvcore = float(f"{2 * ours:.3e}") // 2  # numpy's einsum_path prints "%.3e"; fvcore halves what it reads
    assert fvcore == 19_670_000
    assert [(d.reason, d.flops) for d in _differences(ours, Counter(einsum=fvcore), {})] == \
        [(FvcoreReason.EINSUM_ROUNDING, 1_008)]
    assert [d.reason for d in _differences(ours, Counter(einsum=fvcore + 50_000), {})] == [FvcoreReason.UNEXPLAINED]


def test_every_zoo_difference_has_a_reason_and_the_rows_add_up(zoo_224: dict[str, FvcoreComparison]):
    for name, result in zoo_224.items():
        assert sum(r.macs for r in result.rows) == result.macs, name
        assert sum(r.fvcore_flops for r in result.rows) == result.fvcore_flops, name
        for row in result.rows:
            assert sum(d.flops for d in row.differences) == row.difference, (name, row.name)
        assert FvcoreReason.UNEXPLAINED not in result.by_reason, name
        assert set(result.by_reason) <= {FvcoreReason.BATCH_NORM, FvcoreReason.ADAPTIVE_POOL}, name


def _table(text: str, header_start: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header starts with ``header_start``, by their first cell."""
    lines = text[text.index(header_start):].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_docs_peers_md_fvcore_numbers_are_the_comparisons(zoo_224: dict[str, FvcoreComparison]):
    text = PEERS.read_text()
    totals = _table(text, "| model     | ours: MACs")
    differences = _table(text, "| model     | fvcore − ours")
    for name, result in zoo_224.items():
        ours, _flop_counter, fvcore, *_ = totals[name]
        assert (_number(ours), _number(fvcore)) == (result.macs, result.fvcore_flops), name
        quoted = re.findall(r"[\d,]+", differences[name][0])  # "4,641,280 = 4,616,192 + 25,088", or "0"
        split = result.by_reason
        expected = [result.fvcore_flops - result.macs]
        if expected[0]:
            expected += [split.get(FvcoreReason.BATCH_NORM, 0), split.get(FvcoreReason.ADAPTIVE_POOL, 0)]
        assert [_number(n) for n in quoted] == expected, name


def test_docs_peers_md_quotes_the_vit_numbers_it_states():
    result = compare_fvcore("torchvision:vit_b_16")
    text = " ".join(PEERS.read_text().split())
    per_layer = {-d.flops for r in result.rows for d in r.differences if d.reason is FvcoreReason.UNHANDLED_OP}
    assert per_layer == {2 * 12 * 197 ** 2 * 64} == {59_610_624}
    for figure in (result.macs - result.fvcore_flops, result.by_reason[FvcoreReason.NORM], 5 * 197 * 768,
                   -result.by_reason[FvcoreReason.UNHANDLED_OP], 59_610_624):
        assert f"{figure:,}" in text, figure
    assert set(result.by_reason) == {FvcoreReason.NORM, FvcoreReason.UNHANDLED_OP}


def test_docs_peers_md_quotes_the_maxvit_numbers_it_states():
    result = compare_fvcore("torchvision:maxvit_t")
    text = " ".join(PEERS.read_text().split())
    split = result.by_reason
    assert set(split) == {FvcoreReason.BATCH_NORM, FvcoreReason.NORM, FvcoreReason.ADAPTIVE_POOL,
                          FvcoreReason.EINSUM_ROUNDING}
    for figure in (split[FvcoreReason.BATCH_NORM], split[FvcoreReason.NORM], split[FvcoreReason.ADAPTIVE_POOL],
                   split[FvcoreReason.EINSUM_ROUNDING]):
        assert f"{figure:,}" in text, figure
    rounded = sum(1 for r in result.rows for d in r.differences if d.reason is FvcoreReason.EINSUM_ROUNDING)
    assert f"its {rounded} relative-position attentions" in text and rounded == 22


def test_every_reason_the_comparison_can_print_is_stated_in_docs_peers_md():
    text = " ".join(PEERS.read_text().split())
    assert set(REASONS) == set(FvcoreReason)
    missing = [words for words in REASONS.values() if f"- {words}" not in text]
    assert not missing, "docs/peers.md does not quote (paste them into its --compare section):\n" + "\n".join(missing)


# --- the command line ------------------------------------------------------------------------------------------------

def test_compare_prints_both_counts_per_layer_and_the_split(capsys: pytest.CaptureFixture[str]):
    assert main(["flops", "nin", "--compare", "fvcore"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("nin (d2l-zh v2 §7.3 Network in Network) · input 1×1×224×224 · inference")
    assert re.search(r"^8 +AdaptiveAvgPool2d +0 +250 +\+250 +adaptive avg pooling$", out, re.M)
    assert "fvcore − ours = +250 = adaptive avg pooling +250" in out
    assert f"why (adaptive avg pooling, +250): {REASONS[FvcoreReason.ADAPTIVE_POOL]}" in out
    assert "fvcore did not count (no handle; 0 there): aten::max_pool2d ×3" in out
    assert "batch 1" in out


def test_compare_json_is_a_list_with_the_rows_and_reasons(capsys: pytest.CaptureFixture[str]):
    assert main(["flops", "resnet", "--size", "96", "--compare", "fvcore", "--batch", "8", "--format", "json"]) == 0
    [obj] = json.loads(capsys.readouterr().out)
    assert next(iter(obj)) == "schema_version" and obj["schema_version"] == SCHEMA_VERSION
    assert obj["model"] == "resnet" and obj["input_shape"] == [1, 1, 96, 96]
    assert obj["model_source"].startswith("d2l") and "source" not in obj  # `source` is measured/predicted only
    assert obj["fvcore_flops"] - obj["macs"] == sum(obj["by_reason"].values())
    assert set(obj["by_reason"]) == set(obj["reasons"]) == {"batch_norm", "adaptive_avg_pool"}
    assert all(row["fvcore_flops"] - row["macs"] == row["difference"] for row in obj["rows"])
    assert any("batch 1, not 8" in note for note in obj["notes"])


@pytest.mark.parametrize(("flags", "named"), [(["--train"], "--train"), (["--depth", "1"], "--depth"),
                                              (["--dtype", "bfloat16"], "--dtype")])
def test_compare_rejects_what_fvcore_cannot_compare(flags: list[str], named: str,
                                                    capsys: pytest.CaptureFixture[str]):
    assert main(["flops", "lenet", "--compare", "fvcore", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"drop {named}" in err


def test_a_missing_fvcore_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    for name in [m for m in sys.modules if m == "fvcore" or m.startswith("fvcore.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fvcore", None)  # `import fvcore` raises ImportError
    assert main(["flops", "lenet", "--compare", "fvcore"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install fvcore" in err


def test_fvcore_is_imported_only_when_a_comparison_runs():
    code = ("import sys; from profiler.cli import main; main(['flops', 'lenet']); "
            "sys.stderr.write(str(any(m.startswith('fvcore') for m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "False"


def test_compare_fvcore_appears_only_on_flops():
    from profiler.cli import build_parser

    assert build_parser().parse_args(["flops", "nin", "--compare", "fvcore"]).compare == "fvcore"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["params", "nin", "--compare", "fvcore"])
