"""The issue-28 study driver (experiments/learning_curves/run.sh): which jobs it runs, with which overrides, in
which order, and that it resumes and refuses as the study README says."""

from __future__ import annotations

from tests.helpers.study_driver import calls, drive, driver_repo

DRIVER = "experiments/learning_curves/run.sh"


def test_learning_curves_jobs_are_seed_major_pairs_and_a_checkpoint_is_resumed(tmp_path):
    repo, fake = driver_repo(tmp_path, DRIVER)
    runs = tmp_path / "runs"
    (runs / "mean-seed0").mkdir(parents=True)
    (runs / "mean-seed0" / "results.json").write_text("{}")  # finished: skipped
    (runs / "softmax-seed0" / "checkpoints").mkdir(parents=True)
    (runs / "softmax-seed0" / "checkpoints" / "last.ckpt").write_text("")  # stopped mid-run: resumed
    (runs / "mean-seed1").mkdir()  # stopped before its first checkpoint: started again over it
    result = drive(repo, DRIVER, fake, runs)
    assert result.returncode == 0, result.stderr
    assert "mean:0: done" in result.stdout
    jobs = calls(fake)
    assert [j.split(" scorer=")[1].split(" ")[0:2] for j in jobs] == [
        ["softmax", "seed=0"], ["mean", "seed=1"], ["softmax", "seed=1"]]
    assert all(j.startswith("+experiment=learning_curves scale=cpu logger=csv") for j in jobs)
    assert "resume=true overwrite=false" in jobs[0] and f"hydra.run.dir={runs}/softmax-seed0" in jobs[0]
    assert "resume=false overwrite=true" in jobs[1]
    assert "resume=false overwrite=false" in jobs[2]


def test_batch_size_cells_are_size_major_with_one_seed(tmp_path):
    repo, fake = driver_repo(tmp_path, DRIVER)
    runs = tmp_path / "runs"
    result = drive(repo, DRIVER, fake, runs, STUDY="batch_size")
    assert result.returncode == 0, result.stderr
    jobs = calls(fake)
    assert len(jobs) == 6
    cells = [(j.split("scorer=")[1].split(" ")[0], j.split("data.skills_per_step=")[1].split(" ")[0]) for j in jobs]
    assert cells == [("mean", "64"), ("softmax", "64"), ("mean", "128"), ("softmax", "128"),
                     ("mean", "256"), ("softmax", "256")]
    assert all(j.startswith("+experiment=batch_size scale=cpu") and " seed=0 " in j for j in jobs)
    assert f"hydra.run.dir={runs}/softmax-skills256" in jobs[-1]
    again = drive(repo, DRIVER, fake, runs, "mean:64", STUDY="batch_size")
    assert again.returncode == 0 and "mean:64: done" in again.stdout and len(calls(fake)) == 6


def test_driver_refuses_an_unknown_study_and_a_dirty_checkout(tmp_path):
    repo, fake = driver_repo(tmp_path, DRIVER)
    unknown = drive(repo, DRIVER, fake, tmp_path / "runs", STUDY="batchsize")
    assert unknown.returncode == 2 and "STUDY=batchsize" in unknown.stderr
    (repo / DRIVER).write_text((repo / DRIVER).read_text() + "\n# edited\n")
    dirty = drive(repo, DRIVER, fake, tmp_path / "runs")
    assert dirty.returncode == 2 and "refusing to start" in dirty.stderr
    assert not calls(fake)
