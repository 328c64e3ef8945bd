"""The real `features` command, in a subprocess, end to end."""
import json


from conftest import run_cli


def test_run_then_search_then_info(tmp_path, small_set, cli_env):
    out = tmp_path / "store"
    proc = run_cli("run", small_set, "-o", out, "--words", 64, "--max-side", 256,
                   "--shard-size", 7, "--jobs", 2, env=cli_env, check=True)
    assert "24 images, 0 failed" in proc.stdout
    assert "encode: 24/24 images" in proc.stderr and "images/s" in proc.stderr

    query = small_set / "chelsea" / "rotate12.jpg"
    proc = run_cli("search", out, query, "coins/half.jpg", "-k", 5, "--json", env=cli_env,
                   check=True)
    results = json.loads(proc.stdout)
    assert [r["query"] for r in results] == [str(query), "coins/half.jpg"]
    by_file, by_key = results[0]["results"], results[1]["results"]
    assert len(by_file) == 5 and {"key", "label", "score"} <= set(by_file[0])
    assert by_file[0]["key"] == "chelsea/rotate12.jpg" and by_file[0]["score"] > 0.99
    # a 64-word histogram is coarse: unrelated photos can score near copies; re-ranked,
    # the copies come first
    proc = run_cli("search", out, query, "-k", 5, "--rerank", "--json", env=cli_env,
                   check=True)
    assert all(h["key"].startswith("chelsea/") for h in json.loads(proc.stdout)[0]["results"])
    assert "coins/half.jpg" not in [h["key"] for h in by_key]    # a key query skips itself
    assert [h["key"].split("/")[0] for h in by_key] == ["coins"] * 5
    assert by_key[0]["class"] == "coins"
    scores = [h["score"] for h in by_key]
    assert scores == sorted(scores, reverse=True)

    proc = run_cli("search", out, "coins/half.jpg", "-k", 3, "--rerank", "--json", env=cli_env,
                   check=True)
    hits = json.loads(proc.stdout)[0]["results"]
    assert all(h["key"].startswith("coins/") for h in hits) and hits[0]["inliers"] >= 10
    # a shortlist of one: the results after the first are not verified (0 inliers)
    proc = run_cli("search", out, "coins/half.jpg", "-k", 3, "--rerank", "--shortlist", 1,
                   "--json", env=cli_env, check=True)
    short = json.loads(proc.stdout)[0]["results"]
    assert short[0]["inliers"] >= 10 and [h["inliers"] for h in short[1:]] == [0, 0]
    assert [h["inliers"] for h in hits[1:]] != [0, 0]
    proc = run_cli("search", out, "coins/half.jpg", "--rerank", "--shortlist", 0, env=cli_env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["features: error: --shortlist must be >= 1, got 0"]

    proc = run_cli("search", out, "chelsea/half.jpg", "-k", 4, "--expand", 2, env=cli_env,
                   check=True)
    lines = proc.stdout.splitlines()[1:]
    assert len(lines) == 4 and all("chelsea/" in line and "inliers" in line for line in lines)

    proc = run_cli("search", out, "chelsea/half.jpg", "-k", 2, env=cli_env, check=True)
    assert "chelsea/" in proc.stdout.splitlines()[1]

    info = json.loads(run_cli("info", out, "--json", env=cli_env, check=True).stdout)
    assert info["images"] == 24 and info["failed"] == 0 and info["words"] == 64
    assert info["index_size"] == 24 and info["classes"] == 4
    assert info["config"]["max_side"] == 256


def test_step_commands_one_at_a_time(tmp_path, small_set, cli_env):
    out = tmp_path / "steps"
    common = ["--words", 32, "--max-side", 200, "-q"]
    run_cli("extract", small_set, "-o", out, *common, env=cli_env, check=True)
    assert (out / "sample.npy").exists() and not (out / "store.h5").exists()
    run_cli("codebook", out, env=cli_env, check=True)
    run_cli("encode", small_set, "-o", out, "-q", env=cli_env, check=True)
    run_cli("index", out, env=cli_env, check=True)
    info = json.loads(run_cli("info", out, "--json", env=cli_env, check=True).stdout)
    assert info["words"] == 32 and info["index_size"] == 24


def _assert_one_line_error(proc, fragment, code=2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:"), proc.stderr
    assert fragment in lines[0]


def test_bad_input_gives_one_clear_line(tmp_path, small_store, cli_env):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.jpg").write_text("not an image")
    _assert_one_line_error(run_cli("run", tmp_path / "nope", "-o", tmp_path / "o", env=cli_env),
                           "nope")
    _assert_one_line_error(run_cli("run", tmp_path / "empty", "-o", tmp_path / "o", env=cli_env),
                           "empty")
    _assert_one_line_error(run_cli("search", tmp_path, "x.jpg", env=cli_env),
                           "not a features store")
    _assert_one_line_error(run_cli("info", tmp_path / "notes.jpg", env=cli_env),
                           "not a features store")
    # a query that cannot be answered: its line, and exit 4 (the batch ran)
    _assert_one_line_error(run_cli("search", small_store, tmp_path / "notes.jpg", env=cli_env),
                           "not a usable image", 4)
    _assert_one_line_error(run_cli("search", small_store, "no/such/key.jpg", env=cli_env),
                           "no such key", 4)
    for k in (0, -3):
        _assert_one_line_error(run_cli("search", small_store, "chelsea/half.jpg", "-k", k,
                                       env=cli_env), f"-k must be >= 1, got {k}")
    _assert_one_line_error(run_cli("search", small_store, "chelsea/half.jpg", "--nprobe", 4,
                                   env=cli_env), "--nprobe 4 does not apply to this index (Flat)")
    _assert_one_line_error(run_cli("search", small_store, "chelsea/half.jpg", "--search-params",
                                   "nprobe=0", env=cli_env),
                           "--search-params 'nprobe=0': nprobe must be an integer >= 1, got 0")
    _assert_one_line_error(run_cli("run", tmp_path, "-o", tmp_path / "o2", "--preset", "nope",
                                   env=cli_env), "unknown preset")
    _assert_one_line_error(run_cli("run", tmp_path, "-o", tmp_path / "o3", "--jobs", 0,
                                   env=cli_env), "--jobs")


def test_failure_budget_sets_exit_code(tmp_path, small_set, cli_env):
    import shutil
    src = tmp_path / "src"
    shutil.copytree(small_set, src)
    for i in range(2):
        (src / "coins" / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    args = ["run", src, "--words", 32, "--max-side", 200, "-q"]
    proc = run_cli(*args, "-o", tmp_path / "a", env=cli_env)
    assert proc.returncode == 3 and "exceed the budget" in proc.stderr
    assert "26 images, 2 failed" in proc.stdout
    proc = run_cli(*args, "-o", tmp_path / "b", "--failure-budget", 0.1, env=cli_env)
    assert proc.returncode == 0, proc.stderr


def test_one_bad_query_does_not_stop_a_batch(tmp_path, small_store, small_set, cli_env):
    """A folder of photos with one featureless image (flat grey), a missing key, a file that
    is no image and an empty folder: every other query is answered, in order, each failure is
    one line on stderr, and the exit status (4) says that some failed."""
    import shutil

    import cv2
    import numpy as np
    folder = tmp_path / "photos"
    shutil.copytree(small_set / "chelsea", folder)
    cv2.imwrite(str(folder / "grey.png"), np.full((240, 320), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image: not a query either")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.jpg").write_text("not an image")
    photos = sorted(str(p) for p in folder.iterdir() if p.suffix != ".txt")
    assert len(photos) == 7
    queries = [folder, "no/such/key.jpg", tmp_path / "fake.jpg", "coins/half.jpg",
               tmp_path / "empty"]
    proc = run_cli("search", small_store, *queries, "-k", 3, "--json", env=cli_env)
    assert proc.returncode == 4, proc.stderr
    out = json.loads(proc.stdout)
    want = photos + ["no/such/key.jpg", str(tmp_path / "fake.jpg"), "coins/half.jpg",
                     str(tmp_path / "empty")]
    assert [r["query"] for r in out] == want
    failed = {r["query"]: r["error"] for r in out if "error" in r}
    assert set(failed) == {str(folder / "grey.png"), "no/such/key.jpg",
                           str(tmp_path / "fake.jpg"), str(tmp_path / "empty")}
    assert "no features" in failed[str(folder / "grey.png")]
    assert "no such key" in failed["no/such/key.jpg"]
    assert "not a usable image" in failed[str(tmp_path / "fake.jpg")]
    assert "without image files" in failed[str(tmp_path / "empty")]
    for r in out:
        if r["query"] in failed:
            assert r["results"] == []
        else:
            assert len(r["results"]) == 3 and r["results"][0]["score"] > 0.5
    assert all(h["key"].startswith("chelsea/") for r in out[:7] if r["query"] not in failed
               for h in r["results"][:2])
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[:-1] == [f"features: error: {failed[q]}" for q in want if q in failed]
    assert lines[-1] == "features: 4 of 11 queries could not be answered"

    # the text output: the answered queries' results, in order
    proc = run_cli("search", small_store, folder, "-k", 2, env=cli_env)
    assert proc.returncode == 4
    shown = [line[len("query: "):] for line in proc.stdout.splitlines()
             if line.startswith("query: ")]
    assert shown == [p for p in photos if not p.endswith("grey.png")]
    assert proc.stderr.strip().splitlines()[-1] == \
        "features: 1 of 7 queries could not be answered"

    # all answered: exit 0
    proc = run_cli("search", small_store, folder / "half.jpg", "chelsea/crop60.jpg",
                   env=cli_env)
    assert proc.returncode == 0 and proc.stderr == ""


def test_search_parameters_from_the_command_line(tmp_path, small_store, cli_env):
    import shutil
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    proc = run_cli("index", store, "--index", "IVF4,Flat", "--nprobe", 2, env=cli_env,
                   check=True)
    assert "IVF4,Flat, 24 images, bovw; searched with nprobe=2)" in proc.stdout
    from features.index import INDEX_FILE, current_index_paths
    path = current_index_paths(store)[INDEX_FILE]
    stamp = path.stat().st_mtime_ns
    proc = run_cli("index", store, "--index", "IVF4,Flat", "--search-params", "nprobe=4",
                   env=cli_env, check=True)
    assert "searched with nprobe=4" in proc.stdout
    assert path.stat().st_mtime_ns == stamp     # kept: only the default
    info = run_cli("info", store, env=cli_env, check=True).stdout
    assert "IVF4,Flat on bovw, searched with nprobe=4" in info
    one = json.loads(run_cli("search", store, "coins/half.jpg", "-k", 3, "--nprobe", 4,
                             "--json", env=cli_env, check=True).stdout)
    assert [h["key"].split("/")[0] for h in one[0]["results"]] == ["coins"] * 3
    _assert_one_line_error(run_cli("index", store, "--index", "IVF4,Flat", "--k-factor", 2,
                                   env=cli_env),
                           "--k-factor 2 does not apply to this index (IVF4,Flat)")
    _assert_one_line_error(run_cli("search", store, "coins/half.jpg", "--nprobe", 0,
                                   env=cli_env), "--nprobe must be an integer >= 1, got 0")
