"""The paper's Table 5 ablations: each variant through the training loop and the evaluation,
with the same random draws, and a Table-5-shaped markdown table."""

import pytest

from configs.ablations import PAPER_VARIANTS, AblationVariant
from flows.ablations import ablations
from metrics.paper_tables import TABLE5
from storage import open_store
from tasks.training import read_dataset
from tests.mora_cli import mora
from tests.test_training import write_config

VARIANTS = {v.name: v for v in PAPER_VARIANTS}


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_variants_differ_only_in_their_setting(tmp_path, local_store):
    config = write_config(tmp_path, prompts=1)
    chosen = [VARIANTS[n] for n in ("full", "no-human", "no-modulation", "random-init")]
    result = ablations(variants=chosen, config=config, store=local_store, name="abl",
                       eval_prompts=["a lighthouse on a cliff in a storm", "a koi pond"])
    by_name = {v.name: v for v in result.variants}
    store = open_store(local_store)

    # Every variant trained on the same prompts and candidates: the same random draws.
    datasets = {v.name: read_dataset(local_store, _dataset_key(store, v.weights_key))
                for v in result.variants}
    prompts = {name: list(frame["prompt"]) for name, frame in datasets.items()}
    assert len({tuple(p) for p in prompts.values()}) == 1
    seeds = {name: list(frame["seed"]) for name, frame in datasets.items()}
    assert len({tuple(s) for s in seeds.values()}) == 1

    # Unattended (review=auto), full and no-human settle disagreements alike: same weights.
    assert by_name["full"].review == by_name["no-human"].review == "judge A's pick"
    assert by_name["full"].final_loss == pytest.approx(by_name["no-human"].final_loss)
    # The modulation settings reach the fine-tuning: off trains no modulation embedding.
    assert [by_name[n].modulation for n in ("full", "no-modulation", "random-init")] == [
        "special_token", "off", "random"]
    from agents.finetune import weights_from_bytes

    assert "modulation" not in weights_from_bytes(store.get_bytes(by_name["no-modulation"].weights_key))
    assert "modulation" in weights_from_bytes(store.get_bytes(by_name["random-init"].weights_key))

    # 12 records per evaluated sample, 2 samples per variant, each labelled with its variant.
    assert len(result.records) == 4 * 2 * 12
    assert {r["video"] for r in result.records} == {f"{n}/{i}" for n in by_name for i in (1, 2)}
    assert all(r["kind"] in ("vbench", "proxy", "n/a") and r["method"] for r in result.records)
    assert store.exists(result.parquet_key) and store.exists(result.csv_key)

    # Table 5's layout: our variant rows, then the paper's rows marked as quoted.
    lines = result.markdown.splitlines()
    head = next(line for line in lines if line.startswith("| Model |"))
    assert head.split(" | ")[2:] == [c for c, _ in TABLE5.columns[:-1]] + \
        [TABLE5.columns[-1][0] + " |"]
    ours = [line for line in lines if "| this evaluation |" in line]
    assert [line.split(" | ")[0] for line in ours] == [f"| {v.label} [{v.name}]" for v in chosen]
    quoted = [line for line in lines if "| quoted from the paper (Mora, Table 5) |" in line]
    assert len(quoted) == len(TABLE5.rows)
    assert "| 0.776 | 0.96 | 0.95 | 0.95 | 0.62 | 0.51 | 0.67 | 0.27 |" in result.markdown


def _dataset_key(store, weights_key: str) -> str:
    """weights ← train state ← … ← the round's dataset: follow the provenance parents."""
    key = weights_key
    while not key.startswith("rounds/"):
        key = store.read_provenance(key).parents[0]
    return key


def test_variants_are_validated():
    with pytest.raises(ValueError, match="pattern"):
        AblationVariant(name="../x", label="x")
    with pytest.raises(ValueError, match="modulation"):
        AblationVariant(name="x", label="x", modulation="sometimes")


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_ablate_prints_table5(tmp_path, tiny_zoo):
    config = write_config(tmp_path, prompts=1, held_out_prompts=["a koi pond at dawn"])
    result = mora("ablate", "--variants", "full,no-modulation", "--config", config,
                  "--store", str(tmp_path / "store"), cwd=tmp_path, session_server=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "### Mora, Table 5 (ablation, text-to-video)" in result.stdout
    assert "| Mora w/o Self-modulated [no-modulation] | this evaluation |" in result.stdout
    assert "| full | judge A's pick | special_token | 1 |" in result.stdout
    table = next(line for line in result.stdout.splitlines() if line.startswith("table: "))
    assert table.endswith(".parquet (and .csv)")
