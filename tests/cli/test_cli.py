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
    assert all(h["key"].startswith("chelsea/") for h in by_file)
    assert "coins/half.jpg" not in [h["key"] for h in by_key]    # a key query skips itself
    assert [h["key"].split("/")[0] for h in by_key] == ["coins"] * 5
    assert by_key[0]["class"] == "coins"
    scores = [h["score"] for h in by_key]
    assert scores == sorted(scores, reverse=True)

    proc = run_cli("search", out, "coins/half.jpg", "-k", 3, "--rerank", "--json", env=cli_env,
                   check=True)
    hits = json.loads(proc.stdout)[0]["results"]
    assert all(h["key"].startswith("coins/") for h in hits) and hits[0]["inliers"] >= 10

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


def _assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
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
    _assert_one_line_error(run_cli("search", small_store, tmp_path / "notes.jpg", env=cli_env),
                           "not a usable image")
    _assert_one_line_error(run_cli("search", small_store, "no/such/key.jpg", env=cli_env),
                           "no such key")
    _assert_one_line_error(run_cli("search", small_store, "chelsea/half.jpg", "-k", 0,
                                   env=cli_env), "-k")
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
