"""Several nodes on one machine: two `tunewiz train` launchers of one rank each meet over 127.0.0.1 and
train exactly like one node with two ranks; node-local run directories are said and a resume from one is
refused; Ctrl-C on node 0 stops both with a checkpoint that resumes; a missing node times out with one
clear error."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs import SAMPLED, TUNEWIZ, cli, events, step_losses, write_preset

from tunewiz.train.rendezvous import default_rdzv_id, other_node_commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node(
    rank: int, port: int, *args: str, command: str = "train", cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """One node's launcher (its own session, so a test can signal it like a terminal would)."""
    return subprocess.Popen(
        [*TUNEWIZ, command, *args, "--no-tui", "--nnodes", "2", "--node-rank", str(rank)]
        + ["--rdzv-endpoint", f"127.0.0.1:{port}"],
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(cwd), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(*nodes: subprocess.Popen[str], timeout: float = 240) -> list[tuple[int, str]]:
    """Wait for every node; kill the rest (and their torchrun) if one hangs. (returncode, stdout+stderr)."""
    out = []
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=timeout)
            out.append((node.returncode, stdout + stderr))
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    return out


def test_rendezvous_id_comes_from_the_preset_not_the_run_directory(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(tmp_path / "shared name.yaml", tiny_model_dir, tiny_dataset)
    base = ["train", str(preset), "--dry-run", "--nnodes", "2", "--rdzv-endpoint", "10.0.0.1:29500"]
    one = cli(*base, "--node-rank", "0", "--run-dir", "disk-a/run", cwd=tmp_path)
    two = cli(*base, "--node-rank", "1", "--run-dir", "other/layout", cwd=tmp_path)
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    for result in (one, two):
        assert "--rdzv-id shared-name --rdzv-conf join_timeout=600" in result.stdout
    given = cli(*base, "--node-rank", "1", "--rdzv-id", "exp-7", "--rdzv-timeout", "30", cwd=tmp_path)
    assert "--rdzv-id exp-7 --rdzv-conf join_timeout=30" in given.stdout, given.stderr
    bad = cli(*base, "--rdzv-id", "two words", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: `--rdzv-id two words`"), bad.stderr
    no_port = cli(
        "train", str(preset), "--dry-run", "--nnodes", "2", "--rdzv-endpoint", "node0", cwd=tmp_path
    )
    assert no_port.returncode == 2 and "is not HOST:PORT" in no_port.stderr


def test_other_node_commands_spell_out_rank_and_id() -> None:
    argv = ["train", "p.yaml", "--nnodes", "3", "--node-rank=0", "--rdzv-endpoint", "h:1", "--rdzv-id", "x"]
    assert other_node_commands(argv, nnodes=3, node_rank=0, rdzv_id="x") == [
        "tunewiz train p.yaml --nnodes 3 --rdzv-endpoint h:1 --node-rank 1 --rdzv-id x",
        "tunewiz train p.yaml --nnodes 3 --rdzv-endpoint h:1 --node-rank 2 --rdzv-id x",
    ]
    assert default_rdzv_id("my run/v2") == "my-run-v2"


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_two_ranks(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, two_rank_run: Path
) -> None:
    preset = write_preset(tmp_path / "two.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2})
    # Node-local run directories, named differently: they still meet (the id is the preset's name).
    port = _free_port()
    node0 = _node(0, port, preset.name, "--run-dir", "disk0/a", cwd=tmp_path)
    node1 = _node(1, port, preset.name, "--run-dir", "disk1/b", cwd=tmp_path)
    (code0, out0), (code1, out1) = _finish(node0, node1)
    assert code0 == 0 and code1 == 0, out0 + out1
    other = f"tunewiz train two.yaml --run-dir disk0/a --no-tui --nnodes 2 --rdzv-endpoint 127.0.0.1:{port}"
    assert f"{other} --node-rank 1 --rdzv-id two\n" in out0
    assert "2 of 2 nodes joined" in out0 and "all 2 nodes joined" in out1
    assert "is this node's own" in out0 and "keeps only this node's checkpoint shards" in out1
    a, b = tmp_path / "disk0" / "a", tmp_path / "disk1" / "b"
    assert step_losses(a) == pytest.approx(step_losses(two_rank_run), rel=1e-5)
    assert (a / "final").is_dir() and not (b / "final").exists()
    assert sorted(p.name for p in (b / "checkpoints" / "step-6").glob("*.distcp")) == ["__1_0.distcp"]
    # node 0's checkpoint lacks node 1's shard: resuming it alone is refused, before torchrun starts
    refused = cli("resume", str(a), "--from", "step-4", "--no-tui", "--nproc-per-node", "2", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "lacks 1 shard file(s) that other ranks wrote (`__1_0.distcp`)" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_ctrl_c_on_node_0_stops_both_and_resumes_to_the_same_adapter(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, two_rank_run: Path
) -> None:
    # two_rank_run's preset: the resumed run must end with its losses and adapter bytes.
    preset = write_preset(
        tmp_path / "cc.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2, **SAMPLED}
    )
    # One shared run directory (as on NFS): both launchers use it; node 0 holds the lock, node 1 joins.
    # Each step sleeps 1 s (tunewiz/train/faults.py), so Ctrl-C after step 3 lands before the last step.
    port, slow = _free_port(), {"TUNEWIZ_FAULT_STEP_DELAY": "1"}
    node0 = _node(0, port, str(preset), "--run-dir", "shared", cwd=tmp_path, env=slow)
    node1 = _node(1, port, str(preset), "--run-dir", "shared", cwd=tmp_path, env=slow)
    run = tmp_path / "shared"
    deadline = time.monotonic() + 180
    while not any(e["event"] == "step" and e["step"] >= 3 for e in _events(run)):
        assert node0.poll() is None and time.monotonic() < deadline, "node 0 never reached step 3"
        time.sleep(0.2)
    node0.send_signal(signal.SIGINT)
    (code0, out0), (code1, out1) = _finish(node0, node1)
    assert code0 == 130, out0
    assert code1 != 0 or "stopped" in out1, out1
    assert "shared by all 2 nodes" in out0
    saved = [e["step"] for e in events(run) if e["event"] == "checkpoint"]
    assert saved and not (run / "final").exists()
    port = _free_port()
    res0 = _node(0, port, str(run), command="resume", cwd=tmp_path)
    res1 = _node(1, port, str(run), command="resume", cwd=tmp_path)
    (rc0, rout0), (rc1, rout1) = _finish(res0, res1)
    assert rc0 == 0 and rc1 == 0, rout0 + rout1
    assert step_losses(run) == pytest.approx(step_losses(two_rank_run), rel=1e-5)
    adapter = Path("final") / "adapter" / "adapter_model.safetensors"
    assert (run / adapter).read_bytes() == (two_rank_run / adapter).read_bytes()


def _events(run: Path) -> list[dict]:
    try:
        return events(run)
    except (OSError, ValueError):
        return []


@pytest.mark.slow
def test_a_missing_node_times_out_with_one_clear_error(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(tmp_path / "alone.yaml", tiny_model_dir, tiny_dataset)
    port = _free_port()
    started = time.monotonic()
    ((code, out),) = _finish(_node(0, port, str(preset), "--rdzv-timeout", "3", cwd=tmp_path), timeout=120)
    assert code == 1, out
    assert f"error: only 1 of 2 nodes joined rendezvous `alone` at 127.0.0.1:{port} within 3 s" in out
    assert "firewall" in out and "--rdzv-id alone" in out and "hint:" in out
    assert "Traceback" not in out and "RendezvousTimeoutError" not in out and "frame #" not in out
    assert "  1 of 2 nodes joined" in out and "  0 of 2" not in out
    assert out.count("error:") == 1
    assert time.monotonic() - started < 90
    assert not (tmp_path / "runs" / "alone" / "final").exists()


def _netns_usable() -> str | None:
    """Why two network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root for `ip netns`"
    if not (shutil.which("ip") and shutil.which("unshare")):
        return "needs `ip` (iproute2) and `unshare` (util-linux)"
    probe = subprocess.run(["ip", "netns", "add", f"twz-probe-{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` is not permitted here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"twz-probe-{os.getpid()}"], check=False)
    return None


@pytest.fixture
def two_hosts() -> Iterator[list[str]]:
    """Two network namespaces joined by a veth pair, 10.231.0.1 (host node0) and 10.231.0.2 (node1):
    the command prefix that runs a command as each host (own network, own host name, /etc/hosts
    naming both, as on two machines)."""
    reason = _netns_usable()
    if reason:
        pytest.skip(reason)
    tag = str(os.getpid())
    names = [f"twz{tag}n0", f"twz{tag}n1"]
    veth = [f"tw{tag}v0", f"tw{tag}v1"]
    hosts = "127.0.0.1 localhost\n10.231.0.1 node0\n10.231.0.2 node1\n"
    try:
        steps = [
            *(["ip", "netns", "add", name] for name in names),
            ["ip", "link", "add", veth[0], "type", "veth", "peer", "name", veth[1]],
        ]
        for i, name in enumerate(names):
            steps += [
                ["ip", "link", "set", veth[i], "netns", name],
                ["ip", "-n", name, "addr", "add", f"10.231.0.{i + 1}/24", "dev", veth[i]],
                ["ip", "-n", name, "link", "set", veth[i], "up"],
                ["ip", "-n", name, "link", "set", "lo", "up"],
            ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        for name in names:
            (Path("/etc/netns") / name).mkdir(parents=True, exist_ok=True)
            (Path("/etc/netns") / name / "hosts").write_text(hosts)  # `ip netns exec` mounts it on /etc/hosts
        yield [
            f'ip netns exec {name} unshare --uts sh -c \'hostname node{i}; exec "$0" "$@"\''
            for i, name in enumerate(names)
        ]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


@pytest.mark.slow
def test_two_network_hosts_train_like_one_node_with_two_ranks(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, two_rank_run: Path, two_hosts: list[str]
) -> None:
    preset = write_preset(tmp_path / "two.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2})
    nodes = []
    for rank, prefix in enumerate(two_hosts):
        argv = [*TUNEWIZ, "train", preset.name, "--no-tui", "--nnodes", "2", "--node-rank", str(rank)]
        argv += ["--rdzv-endpoint", "10.231.0.1:29500", "--rdzv-timeout", "120", "--run-dir", "shared"]
        nodes.append(
            subprocess.Popen(
                f"{prefix} {shlex.join(argv)}",
                shell=True,
                cwd=tmp_path,
                env={**os.environ, "TMPDIR": str(tmp_path)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    (code0, out0), (code1, out1) = _finish(*nodes)
    assert code0 == 0 and code1 == 0, out0 + out1
    assert "all 2 nodes joined" in out0 and "node0 (pid" in out0 and "node1 (pid" in out0, out0
    assert "shared by all 2 nodes" in out1
    assert step_losses(tmp_path / "shared") == pytest.approx(step_losses(two_rank_run), rel=1e-5)
