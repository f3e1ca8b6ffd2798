"""Many processes: torchrun's environment, the process group, DistributedDataParallel, and `--nproc`.

Every process runs the same `netspec train`. torchrun (or `netspec train --nproc N`, which calls torchrun's
own launcher) starts them and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them a
run is one process, exactly as before. All the communication is torch.distributed's: DistributedDataParallel
averages the gradients, SyncBatchNorm shares batch statistics, all_reduce sums the metrics.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from netspec.ground.errors import first_line
from netspec.train.errors import TrainError

# Seconds a process waits for the others: to join the group at the start, then in any one collective. Long
# enough for a slow peer's checkpoint or first compilation, short enough that a lost rendezvous is an error.
DEFAULT_TIMEOUT = 300.0


class ProcessError(TrainError):
    """A failure of this process alone (it cannot join the group, or has no GPU of its own): reported by the
    process itself, whatever its rank, where errors that every process meets are reported by rank 0 only."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world_size` processes, and its device."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: one process, no process group

    @property
    def main(self) -> bool:
        """Rank 0, the one process that prints and writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda, but no CUDA device is available")
    return torch.device(device)


def backend_for(device: torch.device, backend: str) -> str:
    """NCCL between GPUs, gloo between CPU processes; `backend` "auto" picks, "nccl" on a CPU is refused."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise TrainError("--dist-backend nccl needs CUDA GPUs but this run is on the CPU; use --dist-backend gloo "
                         "(the default off a GPU)")
    return backend


def per_process_batch(batch_size: int, world_size: int) -> int:
    """The recipe's batch is the global batch: each of the processes takes an equal share of it."""
    if batch_size % world_size:
        below, above = batch_size - batch_size % world_size, batch_size + world_size - batch_size % world_size
        sizes = f"{below} or {above}" if below else f"{above}"
        raise TrainError(f"batch_size {batch_size} is the global batch, split evenly over {world_size} processes, "
                         f"which it is not; use --batch-size {sizes}, or another process count")
    return batch_size // world_size


def launched() -> bool:
    """Whether this process was started by torchrun (or `--nproc`)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def restarted() -> bool:
    """Whether torchrun restarted the group after a process died (`--max-restarts`): the run then continues
    from its last checkpoint, whatever --resume said."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def is_main_process() -> bool:
    """Rank 0, read from torchrun's environment (before or after the process group exists)."""
    return os.environ.get("RANK", "0") == "0"


# Set by `--nproc` in its own environment, so that the processes it starts know whose death to follow.
LAUNCHER_PID = "NETSPEC_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_launcher() -> None:
    """Make this process (one that `--nproc` started) end when the launcher ends, however it ends. torchrun's
    launcher stops its processes itself on SIGTERM or SIGINT, but a launcher killed outright (SIGKILL, the
    out-of-memory killer, a second signal while it waits for them) would leave them training to the end; Linux
    kills them with it (PR_SET_PDEATHSIG). Elsewhere, nothing is done."""
    launcher = os.environ.get(LAUNCHER_PID)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl to call: the launcher's own signal handling is all there is
        return
    if str(os.getppid()) != launcher:  # the launcher died before prctl took effect
        os._exit(128 + int(signal.SIGKILL))


def check_launch(nproc: int, device: str, backend: str, batch_size: int) -> None:
    """Refuse a `--nproc` launch that could not run, before any process is started."""
    if nproc < 1:
        raise TrainError(f"--nproc {nproc}: give at least 1 process")
    dev = pick_device(device)
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise TrainError(f"--nproc {nproc} but this machine has {count} GPU{'s' * (count != 1)}: use --nproc "
                         f"{count} or fewer (one process per GPU), or --device cpu for CPU processes")
    backend_for(dev, backend)
    per_process_batch(batch_size, nproc)


def launch(nproc: int, max_restarts: int, argv: list[str]) -> int:
    """`netspec train --nproc N ...`: torchrun's own launcher starts N processes on this machine, each running
    `python -m netspec` with the same arguments. Returns the exit status: 0, or 1 when a process failed (rank 0
    has said why)."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if max_restarts < 0:
        raise TrainError(f"--max-restarts {max_restarts}: give 0 or more restarts")
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores out (torchrun's default is 1 thread each)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    options = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}",
                                            f"--max-restarts={max_restarts}", "--module", "netspec"])
    options.training_script_args = list(argv)  # set here: torchrun's parser would read --nproc as its own
    os.environ[LAUNCHER_PID] = str(os.getpid())  # inherited by the processes torchrun starts
    try:
        run(options)
    except ChildFailedError as err:
        failures = [f"rank {rank} exit code {f.exitcode}" for rank, f in err.failures.items()]
        if any(f.exitcode != 1 for f in err.failures.values()):  # 1: a reported error; others were not reported
            print(f"netspec train: a process failed ({', '.join(failures)})", file=sys.stderr)
        return 1
    except SignalException as err:  # Ctrl-C or a kill: torchrun has stopped the processes
        return 128 + int(err.sigval)
    finally:
        os.environ.pop(LAUNCHER_PID, None)
    return 0


@contextmanager
def process_group(device: str, backend: str, timeout: float):
    """This process's Context, inside a process group joined through torchrun's environment when there is one
    (and left at the end). A failed collective, most often another process that died, becomes a TrainError."""
    if launched():
        end_with_launcher()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world_size == 1:
        backend_for(dev, backend)
        yield Context(dev)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ProcessError(f"process {local_rank} on this machine has no GPU of its own: {count} here; start "
                               f"at most {count} processes per machine (torchrun --nproc-per-node {count})")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = backend_for(dev, backend)
    _join(backend, dev, timeout, rank, world_size)
    try:
        yield Context(dev, rank, local_rank, world_size, backend)
    except BaseException as err:
        _leave(err)
        if isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and "gloo" in str(err)):
            raise TrainError(f"lost contact with the other processes ({type(err).__name__}: {first_line(err)}); "
                             "under torchrun --max-restarts the group restarts from the last checkpoint") from None
        raise
    else:
        gc.collect()
        dist.barrier()  # leave together, once rank 0 has written the last checkpoint
        dist.destroy_process_group()


def _leave(err: BaseException) -> None:
    """Leave the group after `err`. The process group's threads must be gone before Python shuts down (a thread
    still finishing an exchange then aborts the process: pytorch/pytorch#179291), and DistributedDataParallel
    holds the group, so the frames that `err` keeps (and the model in them) are let go first."""
    traceback.clear_frames(err.__traceback__)
    gc.collect()
    dist.destroy_process_group()


def _join(backend: str, device: torch.device, timeout: float, rank: int, world_size: int) -> None:
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    where = f"{host}:{port}"
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if host and port and port.isdigit() and (rank != 0 or agent_store) and not _reachable(host, int(port), timeout):
        raise ProcessError(f"rank {rank} cannot reach the rendezvous at {where} within {timeout:g} s; check the "
                           "address and port (torchrun --rdzv-endpoint, or MASTER_ADDR and MASTER_PORT) and that "
                           "rank 0's machine is up; --dist-timeout sets the wait")
    wait = timedelta(seconds=timeout)
    try:
        store, rank, world_size = next(dist.rendezvous("env://", rank, world_size, timeout=wait))
        if agent_store and int(os.environ.get("LOCAL_WORLD_SIZE", "0")) == world_size:
            # torchrun's agent keeps one store across restarts of the group (pytorch/pytorch#135712): without a
            # prefix of their own, a restarted group's processes can read the previous one's addresses. On one
            # machine every process has the same restart count; across machines see docs/training.md.
            store = dist.PrefixStore(f"netspec/restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=wait,
                                device_id=device if device.type == "cuda" else None)
    except ValueError as err:  # env:// without MASTER_ADDR or MASTER_PORT
        raise ProcessError(f"WORLD_SIZE is {world_size} but the rendezvous is not set ({first_line(err)}); start "
                           "the processes with torchrun, or set MASTER_ADDR and MASTER_PORT") from None
    except (dist.DistError, RuntimeError) as err:
        raise ProcessError(f"rank {rank}: the {world_size} processes did not all meet at the rendezvous {where} "
                           f"within {timeout:g} s ({type(err).__name__}: {first_line(err)}); check the address and "
                           "port (torchrun --rdzv-endpoint, or MASTER_ADDR and MASTER_PORT) and that every machine "
                           "was started; --dist-timeout sets the wait") from None


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether the rendezvous store (rank 0's, or torchrun's agent's) accepts a connection within `timeout`
    seconds, tried before torch's client, whose failures come as pages of C++ log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def wrap(model: torch.nn.Module, ctx: Context, sync_bn: bool) -> torch.nn.Module:
    """The module to train: `model` itself for one process, else DistributedDataParallel around it (with its
    batch norms made SyncBatchNorm first for --sync-bn). Checkpoints save `model`, never the wrapper."""
    if not ctx.distributed:
        return model
    if sync_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_bn:
        CpuSyncBatchNorm.convert(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the gradients, as torch.distributed.nn's."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(_BatchNorm):
    """SyncBatchNorm for CPU processes (gloo): torch's own refuses CPU tensors, and DDP refuses it on a CPU. The
    batch statistics are the mean and variance over all processes' batches, summed with all_reduce (whose
    gradient flows back across the processes), as one process would compute them over the whole batch."""

    @classmethod
    def convert(cls, module: torch.nn.Module) -> None:
        """Replace each batch norm inside `module` by one of these, sharing its parameters and buffers."""
        for name, child in module.named_children():
            if isinstance(child, _BatchNorm):
                synced = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                synced.weight, synced.bias = child.weight, child.bias
                synced.running_mean, synced.running_var = child.running_mean, child.running_var
                synced.num_batches_tracked = child.num_batches_tracked
                synced.train(child.training)
                module.add_module(name, synced)
            else:
                cls.convert(child)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype)
        sums = _SumOverProcesses.apply(torch.cat([input.sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centered = input - mean.view(shape)
        variance = _SumOverProcesses.apply((centered * centered).sum(dims)) / total
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * total / (total - 1), factor)
        return output


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sum_over_processes(values: list[float | torch.Tensor], ctx: Context) -> list[float]:
    """Each value summed over all processes (in float64: counts stay exact)."""
    total = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(ctx.device) for v in values])
    if ctx.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def any_process(flag: bool | torch.Tensor, ctx: Context) -> bool:
    """True on every process when `flag` is true on any: all of them stop together, none waits for a peer that
    left."""
    if not ctx.distributed:
        return bool(flag)
    value = torch.as_tensor(flag, dtype=torch.int32).to(ctx.device).reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def share_buffers(model: torch.nn.Module, ctx: Context) -> None:
    """Give every process rank 0's buffers (batch-norm running statistics), as DDP does before each training
    forward: the sharded evaluation then uses the statistics that rank 0 saves in the checkpoint."""
    if ctx.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def gathered(items: list, ctx: Context) -> list:
    """Every process's `items`, concatenated in rank order (all_gather_object); `items` itself with one."""
    if not ctx.distributed:
        return list(items)
    everyone = [None] * ctx.world_size
    dist.all_gather_object(everyone, list(items))
    return [item for part in everyone for item in part]


def raise_on_every_process(error: str | None, ctx: Context) -> None:
    """Rank 0's failure (`error`), raised on every process, so that none waits for rank 0 in a collective."""
    if ctx.distributed:
        message = [error]
        dist.broadcast_object_list(message, src=0)
        error = message[0]
    if error:
        raise TrainError(error)
