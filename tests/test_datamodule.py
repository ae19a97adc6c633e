"""UWEDataModule / UWETrainDataset on the fixture graphs (tests/fixtures/edges) with the tiny tokenizer."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from uwe_lightning.data.datamodule import (
    GraphBatch,
    UWEBatch,
    UWEDataModule,
    UWETrainDataset,
    leave_signals_to_main,
)
from uwe_lightning.data.edges import EdgeFileSource, load_edges
from uwe_lightning.data.graphs import load_vocabulary, normalize_text
from uwe_lightning.data.sampling import augment_texts
from uwe_lightning.protocol import OpenProtocolSource

EDGES = Path(__file__).parent / "fixtures" / "edges"
EDGE_FILES = {"J": str(EDGES / "J.csv"), "V": str(EDGES / "V.jsonl"), "A": str(EDGES / "A.tsv")}
TEACH = 9  # the fixture skill without a neighbour in any graph


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary(EDGES / "vocab.csv")


@pytest.fixture(scope="module")
def graphs(vocab):
    return {name: load_edges(path, vocab, name) for name, path in EDGE_FILES.items()}


def raw_edges(vocab) -> dict[str, set[tuple[int, str]]]:
    """(skill index, normalised text) straight from the fixture files: the brute-force truth."""
    frames = {
        "J": pd.read_csv(EDGE_FILES["J"]),
        "V": pd.read_json(EDGE_FILES["V"], lines=True),
        "A": pd.read_csv(EDGE_FILES["A"], sep="\t"),
    }
    return {
        name: {(vocab.index(s), normalize_text(t)) for s, t in zip(f["skill"], f["text"], strict=True)}
        for name, f in frames.items()
    }


def make_dataset(vocab, graphs, tokenizer=None, **kwargs) -> UWETrainDataset:
    options = {"skills_per_step": 4, "max_length": 32, "augment_p": 0.0, "seed": 0}
    options.update(kwargs)
    return UWETrainDataset(vocab, graphs, tokenizer=tokenizer, **options)


def test_distinct_skills_and_one_neighbour_each(vocab, graphs):
    dataset = make_dataset(vocab, graphs)
    for step in range(50):
        sample = dataset.sample(step)
        assert len(set(sample.skills.tolist())) == 4
        assert sample.skill_texts == [vocab.labels[s] for s in sample.skills]
        for name, part in sample.graphs.items():
            graph = graphs[name]
            with_neighbour = np.flatnonzero(graph.skill_degree[sample.skills] > 0)
            np.testing.assert_array_equal(part.pair_index, with_neighbour)  # one text per such skill, in row order
            for row, text in zip(part.pair_index, part.text_ids, strict=True):
                assert text in graph.neighbors(sample.skills[row])


def test_pos_mask_equals_brute_force_graph_edges(vocab, graphs):
    truth = raw_edges(vocab)
    dataset = make_dataset(vocab, graphs)
    seen_duplicate_text = seen_multi_skill_text = False
    for step in range(200):
        sample = dataset.sample(step)
        for name, part in sample.graphs.items():
            expected = np.array(
                [[(int(s), normalize_text(t)) in truth[name] for t in part.texts] for s in sample.skills], dtype=bool
            ).reshape(len(sample.skills), len(part.texts))
            np.testing.assert_array_equal(part.pos_mask, expected)
            assert part.pos_mask[part.pair_index, np.arange(len(part.texts))].all()  # the sampled pair
            seen_duplicate_text |= len(set(part.text_ids.tolist())) < len(part.text_ids)
            seen_multi_skill_text |= bool((part.pos_mask.sum(axis=0) >= 2).any())
    assert seen_duplicate_text, "no step sampled the same text for two skills; the fixture should allow it"
    assert seen_multi_skill_text, "no step had a text linked to two batch skills"


def test_job_linked_to_two_sampled_skills_is_positive_of_both(vocab, graphs):
    dataset = make_dataset(vocab, graphs)
    python, sql = vocab.index("python"), vocab.index("sql")
    for step in range(500):
        sample = dataset.sample(step)
        rows = {int(s): i for i, s in enumerate(sample.skills)}
        if python in rows and sql in rows:
            part = sample.graphs["J"]
            for j, text in enumerate(part.texts):
                if text in ("data engineer", "data analyst"):
                    assert part.pos_mask[rows[python], j] and part.pos_mask[rows[sql], j]
            return
    pytest.fail("python and sql were never sampled together")


def test_skill_without_neighbours_contributes_no_text(vocab, graphs):
    dataset = make_dataset(vocab, graphs)
    found = 0
    for step in range(100):
        sample = dataset.sample(step)
        if TEACH not in sample.skills:
            continue
        found += 1
        row = int(np.flatnonzero(sample.skills == TEACH)[0])
        for part in sample.graphs.values():
            assert row not in part.pair_index
            assert len(part.texts) < len(sample.skills)
            assert not part.pos_mask[row].any()
    assert found > 0


def test_augmentation_off(vocab, graphs):
    dataset = make_dataset(vocab, graphs, augment_p=0.0)
    for step in range(20):
        part = dataset.sample(step).graphs["V"]
        assert part.texts == [graphs["V"].texts[t] for t in part.text_ids]
        assert (part.context_ids == -1).all()


def test_augmentation_always_uses_out_of_batch_sentence(vocab, graphs):
    dataset = make_dataset(vocab, graphs, augment_p=1.0, skills_per_step=3)
    sides = set()
    n_augmented = 0
    for step in range(60):
        sample = dataset.sample(step)
        part = sample.graphs["V"]
        batch = set(sample.skills.tolist())
        for text_id, text, context, is_prefix in zip(
            part.text_ids, part.texts, part.context_ids, part.context_is_prefix, strict=True
        ):
            original = graphs["V"].texts[text_id]
            if context < 0:
                assert text == original
                continue
            n_augmented += 1
            extra = graphs["V"].texts[context]
            assert set(graphs["V"].skills_of(context).tolist()).isdisjoint(batch)
            assert text == (f"{extra} {original}" if is_prefix else f"{original} {extra}")
            sides.add(bool(is_prefix))
    assert n_augmented > 100
    assert sides == {True, False}


def test_augmentation_keeps_real_sentence_within_token_budget(vocab, graphs, tokenizer):
    max_length = 16
    dataset = make_dataset(vocab, graphs, tokenizer, augment_p=1.0, skills_per_step=3, max_length=max_length)
    n_cut = 0
    for step in range(40):
        part = dataset.sample(step).graphs["V"]
        for text_id, text, context, is_prefix in zip(
            part.text_ids, part.texts, part.context_ids, part.context_is_prefix, strict=True
        ):
            original = graphs["V"].texts[text_id]
            assert len(tokenizer(text)["input_ids"]) <= max_length + 1  # +1: re-tokenising a joint may differ
            if context >= 0:
                assert text.endswith(original) if is_prefix else text.startswith(original)
                full = graphs["V"].texts[context]
                n_cut += len(text) < len(original) + 1 + len(full)
    assert n_cut > 0


def test_augment_texts_cuts_at_token_boundaries(tokenizer):
    # "sql" is 3 tokens ([CLS] sql [SEP]); max_length 6 leaves 3 one-token words of context, taken next to it
    contexts = ["the data team lead", "the data team lead", None]
    out = augment_texts(["sql", "sql", "sql"], contexts, np.array([True, False, True]), tokenizer, 6)
    assert out == ["data team lead sql", "sql the data team", "sql"]
    assert augment_texts(["sql"], ["team"], np.array([False]), tokenizer, 3) == ["sql"]  # no room left


def test_batch_tensors(vocab, graphs, tokenizer):
    dataset = make_dataset(vocab, graphs, tokenizer, augment_p=0.8)
    batch = dataset.batch(7)
    assert isinstance(batch, UWEBatch) and batch.step == 7
    assert set(batch.skill_inputs) == {"input_ids", "attention_mask"}
    assert batch.skill_inputs["input_ids"].shape[0] == 4
    assert set(batch.graphs) <= {"J", "V", "A"}
    sample = dataset.sample(7)
    for name, part in batch.graphs.items():
        assert isinstance(part, GraphBatch)
        n = len(sample.graphs[name].texts)
        assert part.text_inputs["input_ids"].shape[0] == n
        assert part.text_inputs["input_ids"].shape[1] <= 32
        assert part.pos_mask.dtype == torch.bool and part.pos_mask.shape == (4, n)
        assert part.pair_index.dtype == torch.long
        np.testing.assert_array_equal(part.pos_mask.numpy(), sample.graphs[name].pos_mask)


def test_lightning_moves_batch_dataclasses(vocab, graphs, tokenizer):
    from lightning.fabric.utilities.apply_func import move_data_to_device

    batch = make_dataset(vocab, graphs, tokenizer).batch(0)
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved, UWEBatch) and moved.step == 0
    assert moved.skill_inputs["input_ids"].device.type == "meta"
    for part in moved.graphs.values():
        assert isinstance(part, GraphBatch)
        assert part.pos_mask.device.type == "meta" and part.pair_index.device.type == "meta"
        assert part.text_inputs["attention_mask"].device.type == "meta"
    assert batch.skill_inputs["input_ids"].device.type == "cpu"  # the original is untouched


def assert_same_batch(a: UWEBatch, b: UWEBatch) -> None:
    assert a.step == b.step
    assert torch.equal(a.skill_inputs["input_ids"], b.skill_inputs["input_ids"])
    assert set(a.graphs) == set(b.graphs)
    for name in a.graphs:
        assert torch.equal(a.graphs[name].text_inputs["input_ids"], b.graphs[name].text_inputs["input_ids"])
        assert torch.equal(a.graphs[name].pos_mask, b.graphs[name].pos_mask)
        assert torch.equal(a.graphs[name].pair_index, b.graphs[name].pair_index)


def make_module(tokenizer, **kwargs) -> UWEDataModule:
    source = EdgeFileSource(edge_files=EDGE_FILES, skill_vocab=str(EDGES / "vocab.csv"))
    options = {"source": source, "skills_per_step": 4, "max_length": 32, "num_steps": 8, "seed": 3, **kwargs}
    module = UWEDataModule(**options)
    module.set_tokenizer(tokenizer)
    return module


def test_determinism_seed_and_resume(tokenizer):
    full = list(make_module(tokenizer).train_dataloader())
    assert [b.step for b in full] == list(range(8))
    for a, b in zip(full, make_module(tokenizer).train_dataloader(), strict=True):
        assert_same_batch(a, b)
    other = next(iter(make_module(tokenizer, seed=4).train_dataloader()))
    assert not torch.equal(other.skill_inputs["input_ids"], full[0].skill_inputs["input_ids"])
    resumed = make_module(tokenizer)
    resumed.set_start_step(5)
    tail = list(resumed.train_dataloader())
    assert [b.step for b in tail] == [5, 6, 7]
    for a, b in zip(full[5:], tail, strict=True):
        assert_same_batch(a, b)


def test_workers_split_steps_in_order(tokenizer):
    single = list(make_module(tokenizer, num_steps=5).train_dataloader())
    multi = list(make_module(tokenizer, num_steps=5, num_workers=2).train_dataloader())
    assert [b.step for b in multi] == [0, 1, 2, 3, 4]
    for a, b in zip(single, multi, strict=True):
        assert_same_batch(a, b)


def test_unbounded_stream_and_state_dict(tokenizer):
    module = make_module(tokenizer, num_steps=None)
    loader = module.train_dataloader()
    with pytest.raises(TypeError):
        len(module.dataset)
    iterator = iter(loader)
    steps = [module.on_before_batch_transfer(next(iterator), 0).step for _ in range(3)]
    assert steps == [0, 1, 2]
    assert module.state_dict()["next_step"] == 3
    restored = make_module(tokenizer, num_steps=None)
    restored.load_state_dict(module.state_dict())
    assert next(iter(restored.train_dataloader())).step == 3
    with pytest.warns(UserWarning, match="data seed 3"):
        make_module(tokenizer, seed=99).load_state_dict(module.state_dict())


def test_trainer_resume_continues_the_stream(tokenizer, tmp_path):
    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.steps: list[int] = []

        def training_step(self, batch, batch_idx):
            self.steps.append(batch.step)
            return (self.weight - batch.skill_inputs["input_ids"].float().mean()).pow(2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def trainer(max_steps: int) -> pl.Trainer:
        return pl.Trainer(
            max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
        )

    first = Recorder()
    run = trainer(3)
    run.fit(first, datamodule=make_module(tokenizer, num_steps=None))
    assert first.steps == [0, 1, 2]
    run.save_checkpoint(tmp_path / "step3.ckpt")
    second = Recorder()
    trainer(6).fit(second, datamodule=make_module(tokenizer, num_steps=None), ckpt_path=tmp_path / "step3.ckpt")
    assert second.steps == [3, 4, 5]


def test_config_errors(tokenizer):
    with pytest.raises(ValueError, match="on_unknown"):
        EdgeFileSource(edge_files=EDGE_FILES, on_unknown="ignore")
    with pytest.raises(ValueError, match=r"edge_files for graphs \['A'\]"):
        UWEDataModule(EdgeFileSource(edge_files={"J": "j.csv", "V": "v.csv"})).setup()
    with pytest.raises(ValueError, match="the open protocol has graphs"):
        OpenProtocolSource().load(["X"])
    with pytest.raises(ValueError, match="skills_per_step"):
        make_module(tokenizer, skills_per_step=11).setup()
    module = make_module(tokenizer, graphs=["A"])
    module.tokenizer = None
    module.setup()
    module.dataset.tokenizer = None
    with pytest.raises(RuntimeError, match="no tokenizer"):
        module.train_dataloader()


def test_graph_subset(tokenizer):
    module = make_module(tokenizer, graphs=["V"], augment_p=0.0)
    batch = next(iter(module.train_dataloader()))
    assert set(batch.graphs) == {"V"}
    assert module.graph_summary() == {"V": {"texts": 10, "edges": 11, "skills_covered": 9}}
    assert module.paper_num_steps == 3  # ceil(11 / 4)


@pytest.mark.data
def test_open_protocol_batch_of_512(real_data_dir, tokenizer):
    module = UWEDataModule(OpenProtocolSource(data_dir=str(real_data_dir)), skills_per_step=512, num_steps=2)
    module.set_tokenizer(tokenizer)
    start = time.perf_counter()
    module.setup("fit")
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    batch = module.dataset.batch(0)
    batch_s = time.perf_counter() - start
    sizes = {name: part.text_inputs["input_ids"].shape[0] for name, part in batch.graphs.items()}
    print(f"\nopen protocol setup {setup_s:.2f}s; one 512-skill batch {batch_s:.3f}s; texts per graph {sizes}")
    assert batch.skill_inputs["input_ids"].shape[0] == 512
    assert set(sizes) == {"J", "V", "A"}
    assert sizes["V"] == 512  # every skill has a description
    assert 300 < sizes["J"] <= 512 and 150 < sizes["A"] <= 512
    for part in batch.graphs.values():
        assert part.pos_mask.shape == (512, part.pair_index.numel())
        assert part.pos_mask[part.pair_index, torch.arange(part.pair_index.numel())].all()


class _SignalProbe(torch.utils.data.IterableDataset):
    """Yields, from inside a worker, what that worker does on SIGTERM / SIGINT."""

    def __iter__(self):
        yield (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))


def test_workers_leave_sigterm_and_sigint_to_the_main_process():
    """A signal sent to the whole process group (a scheduler, pkill, Ctrl-C) must not kill the workers: the main
    process checkpoints and stops them, so the run stays resumable (and a multirun does not move on)."""
    loader = torch.utils.data.DataLoader(_SignalProbe(), batch_size=None, num_workers=1,
                                         worker_init_fn=leave_signals_to_main)
    assert [tuple(handlers) for handlers in loader] == [(signal.SIG_IGN, signal.SIG_IGN)]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # the main process keeps its own handling


# ---------------------------------------------------------------------------------------------------------
# data.sampling=per_graph
# ---------------------------------------------------------------------------------------------------------


def test_per_graph_fills_every_graph_and_keeps_exact_positives(vocab, graphs):
    truth = raw_edges(vocab)
    uniform = make_dataset(vocab, graphs)
    dataset = make_dataset(vocab, graphs, sampling="per_graph")
    grew = False
    for step in range(100):
        sample, base = dataset.sample(step), uniform.sample(step)
        skills = sample.skills.tolist()
        assert len(set(skills)) == len(skills)
        np.testing.assert_array_equal(sample.skills[:4], base.skills)  # the uniform draw, topped up after it
        grew |= len(skills) > 4
        for name, part in sample.graphs.items():
            graph = graphs[name]
            assert len(part.texts) == min(4, graph.n_skills_covered)  # S texts per graph (fixtures cover >= 4)
            assert len(set(part.pair_index.tolist())) == len(part.texts)  # one text per own skill
            expected = np.array([[(int(s), normalize_text(t)) in truth[name] for t in part.texts] for s in skills],
                                dtype=bool).reshape(len(skills), len(part.texts))
            np.testing.assert_array_equal(part.pos_mask, expected)  # every row, also other graphs' top-ups
            assert part.pos_mask[part.pair_index, np.arange(len(part.texts))].all()
    assert grew, "no step needed a top-up; the fixture has partial coverage"


def test_per_graph_is_skill_uniform_under_full_coverage(vocab):
    from uwe_lightning.data.graphs import BipartiteGraph

    full = {name: BipartiteGraph.from_pairs(name, list(range(len(vocab))) * 2,
                                            [f"{name} text {i % 7}" for i in range(2 * len(vocab))], len(vocab))
            for name in ("J", "A")}
    a, b = make_dataset(vocab, full), make_dataset(vocab, full, sampling="per_graph")
    for step in range(20):
        x, y = a.sample(step), b.sample(step)
        np.testing.assert_array_equal(x.skills, y.skills)
        for name in full:
            assert x.graphs[name].texts == y.graphs[name].texts


def test_per_graph_batches_and_bad_sampling_name(tokenizer):
    module = make_module(tokenizer, sampling="per_graph", skills_per_step=6)
    batch = next(iter(module.train_dataloader()))
    rows = batch.skill_inputs["input_ids"].shape[0]
    assert rows >= 6
    for part in batch.graphs.values():
        assert part.pos_mask.shape[0] == rows
    assert module.state_dict()["sampling"] == "per_graph"
    with pytest.raises(ValueError, match="data.sampling must be one of"):
        make_module(tokenizer, sampling="uniform")


def test_batch_counts_logged_per_step(tokenizer):
    from uwe_lightning.training.module import batch_counts

    module = make_module(tokenizer, augment_p=0.0)
    batch = next(iter(module.train_dataloader()))
    counts = batch_counts(batch)
    assert counts["train/skills"] == 4
    for name, part in batch.graphs.items():
        assert counts[f"train/{name}/texts"] == part.pos_mask.shape[1]
        assert counts[f"train/{name}/rows_without_positive"] == int((~part.pos_mask.any(dim=1)).sum())
