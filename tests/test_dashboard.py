import json
import shutil
import subprocess
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from click.testing import CliRunner

from ronas_optuna.cli import main
from ronas_optuna.dashboard import artifact_store
from ronas_optuna.storage import StorageURL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def searched(tmp_path_factory, synthetic_root):
    tmp = tmp_path_factory.mktemp("dash")
    storage = f"sqlite:///{tmp / 'dash.db'}"
    r = CliRunner()
    res = r.invoke(
        main,
        [
            "search",
            str(synthetic_root),
            "--storage",
            storage,
            "--study",
            "dash",
            "--trials",
            "3",
            "--device",
            "cpu",
            "--spacing",
            "2.0",
            "--depth",
            "2",
            "--base-width",
            "4",
            "--max-width",
            "8",
            "--steps-per-trial",
            "2",
            "--finetune-steps",
            "0",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    res = r.invoke(
        main,
        ["export", "--storage", storage, "--study", "dash", "-o", str(tmp / "model.pt"), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    return storage, tmp


@pytest.fixture(scope="module")
def server(searched):
    import optuna_dashboard

    storage, tmp = searched
    app = optuna_dashboard.wsgi(
        storage, artifact_store=artifact_store(StorageURL.parse(storage).artifact_dir)
    )
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}", storage, tmp
    httpd.shutdown()


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def test_artifact_folder_is_beside_the_database(searched):
    storage, tmp = searched
    assert StorageURL.parse(storage).artifact_dir == tmp / "dash_artifacts"
    assert any((tmp / "dash_artifacts").iterdir())


def test_dashboard_api_shows_attrs_note_and_artifacts(server):
    base, storage, _ = server
    study = optuna.load_study(study_name="dash", storage=storage)
    studies = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == "dash")
    detail = json.loads(_get(f"{base}/api/studies/{sid}")[1])
    trials = detail["trials"]
    assert len(trials) == 3
    keys = {a["key"] for a in trials[0]["user_attrs"]}
    assert {"arch", "dice_per_class", "params", "flops", "memory_gb", "seconds"} <= keys
    assert (
        "Search space" in detail["note"]["body"]
        and study.best_trial.user_attrs["arch"] in detail["note"]["body"]
    )
    best = next(t for t in trials if t["number"] == study.best_trial.number)
    names = {a["filename"] for a in best["artifacts"]}
    assert any(n.endswith("_architecture.png") for n in names) and any(
        n.endswith("_overlay.png") for n in names
    )
    assert any(a["filename"] == "model.pt" for a in detail["artifacts"])
    art = best["artifacts"][0]
    status, body = _get(f"{base}/artifacts/{sid}/{best['trial_id']}/{art['artifact_id']}")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)")
def test_real_browser_renders_the_best_architecture(server, tmp_path):
    base, storage, tmp = server
    study = optuna.load_study(study_name="dash", storage=storage)
    code = study.best_trial.user_attrs["arch"]
    studies = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == "dash")
    url = f"{base}/dashboard/studies/{sid}/trials?numbers={study.best_trial.number}"
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert code in dom, dom[-2000:]
    shot = tmp / "dashboard.png"
    subprocess.run(
        [*flags, "--window-size=1400,1000", f"--screenshot={shot}", url], capture_output=True, timeout=120
    )
    assert shot.exists() and shot.read_bytes()[:4] == b"\x89PNG"
    shutil.copy(shot, tmp_path / "dashboard.png")


def test_a_journal_file_is_opened_from_its_snapshot_and_a_missing_one_refused(tmp_path, monkeypatch):
    import optuna_dashboard

    from ronas_optuna.dashboard import run_dashboard
    from ronas_optuna.journal import SnapshotJournalStorage

    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: served.append(storage))
    journal = tmp_path / "s.log"
    optuna.create_study(study_name="s", storage=SnapshotJournalStorage(journal)).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=3
    )
    run_dashboard(str(journal), None)
    assert isinstance(served[0], SnapshotJournalStorage)
    assert len(optuna.load_study(study_name="s", storage=served[0]).trials) == 3
    with pytest.raises(ValueError, match="does not exist"):
        run_dashboard(str(tmp_path / "missing.log"), None)
    assert not (tmp_path / "missing.log").exists()


def test_dashboard_shows_a_two_objective_front_with_its_architectures(tmp_path, synthetic_root):
    import optuna_dashboard

    storage = f"sqlite:///{tmp_path / 'mo.db'}"
    args = ["search", str(synthetic_root), "--storage", storage, "--study", "mo", "--trials", "4"]
    args += ["--objectives", "dice,memory", "--device", "cpu", "--spacing", "2.0", "--depth", "2"]
    args += ["--base-width", "4", "--max-width", "8", "--steps-per-trial", "1", "--finetune-steps", "0"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    httpd = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        sid = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"][0]["study_id"]
        detail = json.loads(_get(f"{base}/api/studies/{sid}")[1])
    finally:
        httpd.shutdown()
    study = optuna.load_study(study_name="mo", storage=storage)
    assert detail["directions"] == ["maximize", "minimize"]
    assert detail["objective_names"] == ["dice", "memory_gb"]  # the Pareto plot's axes
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(t.number for t in study.best_trials)
    note = detail["note"]["body"]
    assert "## Pareto front" in note and "- objectives: dice,memory" in note
    assert all(t.user_attrs["arch"] in note for t in study.best_trials)
