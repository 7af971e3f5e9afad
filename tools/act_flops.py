"""FLOPs of one call, counted by torch.utils.flop_counter.FlopCounterMode with the transformer fast
path off, in total and per part (module), with two of the counter's formulas corrected; used by
tools/act_benchmark.py (see its docstring) and tests/test_act_reference.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _conv_backward_flops(
    grad_out,
    x,
    weight,
    bias,
    stride,
    padding,
    dilation,
    transposed,
    output_padding,
    groups,
    output_mask,
    **kwargs,
) -> int:
    # output_mask: which of the gradients of input, weight and bias are computed
    return flop_counter.conv_flop_count(x, weight, grad_out, transposed) * (output_mask[0] + output_mask[1])


# Corrections to FlopCounterMode's formulas: it counts scaled_dot_product_attention's GPU kernels
# only (here the CPU one too), and its convolution backward leaves out `groups`, which overcounts a
# depthwise convolution's by its channel count (here the forward's count per gradient, as it is).
FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward_flops,
    aten.convolution_backward: _conv_backward_flops,
}


@contextmanager
def around(
    parts: dict[str, list[nn.Module]], enter: Callable[[str], None], leave: Callable[[str], None]
) -> Iterator[None]:
    """Calls enter(part) before and leave(part) after each forward call of a part's modules."""

    def hooks(part: str) -> tuple[Callable[..., None], Callable[..., None]]:
        def before(module: nn.Module, args: object) -> None:
            enter(part)

        def after(module: nn.Module, args: object, output: object) -> None:
            leave(part)

        return before, after

    handles = []
    for part, modules in parts.items():
        before, after = hooks(part)
        for module in modules:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_flops(fn: Callable[[], object], parts: dict[str, list[nn.Module]] | None = None) -> dict[str, int]:
    """Floating-point operations of one call of `fn` (matrix products, convolutions, attention; a
    multiply-add is 2): "total", and for each of `parts` what its modules' forward calls did. The
    transformer fast path is off meanwhile: its fused kernels are invisible to the counter."""
    counts: dict[str, int] = defaultdict(int)
    starts: list[int] = []

    def enter(part: str) -> None:
        starts.append(counter.get_total_flops())

    def leave(part: str) -> None:
        counts[part] += counter.get_total_flops() - starts.pop()

    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
        with counter, around(parts or {}, enter, leave):
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
    return {"total": counter.get_total_flops(), **counts}
