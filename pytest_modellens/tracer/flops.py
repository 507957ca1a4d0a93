"""FLOPs, opt in: torch's own ``FlopCounterMode`` counts them, this attributes them to nodes.

:class:`FlopRecorder` is the :class:`~.recorder.Recorder` with one ``FlopCounterMode`` running
for the whole forward. Each operation the recorder writes down gets what the counter's total
grew by while it ran, so the nodes add up to exactly the counter's total, and the formulas
are torch's (matrix products, convolutions, attention: what ``FlopCounterMode`` counts;
element-wise ops count zero there and here). Work that no operation of the trace saw (a
TorchScript module's insides) goes to the node that records it, when the module exits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch.utils.flop_counter import FlopCounterMode

from .. import ids
from ..trace import ModuleInfo, Node
from .modules import ModuleTree
from .recorder import Recorder
from .state import WriteGuard

if TYPE_CHECKING:
    from typing_extensions import Self


class FlopRecorder(Recorder):
    """A recorder that also counts each node's FLOPs with ``FlopCounterMode``."""

    def __init__(self, tree: ModuleTree, *, stats: bool, guard: WriteGuard) -> None:
        super().__init__(tree, stats=stats, guard=guard)
        self.counter = FlopCounterMode(display=False)
        self.flops: dict[str, int] = {}  # node id -> FLOPs
        self._attributed = 0
        self._settled = 0  # nodes seen by the last settle

    def __enter__(self) -> Self:
        self.counter.__enter__()
        try:
            super().__enter__()
        except BaseException:
            self.counter.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.counter.__exit__(*exc)

    def _settle(self) -> None:
        """Give the FLOPs counted since the last settle to the newest node, if one was added."""
        if len(self.nodes) == self._settled:
            return
        self._settled = len(self.nodes)
        total = sum(self.counter.flop_counts["Global"].values())
        if total > self._attributed:
            node_id = self.nodes[-1].node_id
            self.flops[node_id] = self.flops.get(node_id, 0) + total - self._attributed
            self._attributed = total

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = super().__torch_function__(func, types, args, kwargs)
        self._settle()
        return result

    def exit_module(self, module: Any, args: Any, *rest: Any) -> None:
        super().exit_module(module, args, *rest)
        self._settle()

    def counted(self, nodes: list[Node]) -> list[Node]:
        """``nodes`` with their FLOPs (0 where none were counted)."""
        return [replace(node, flops=self.flops.get(node.node_id, 0)) for node in nodes]


def with_module_flops(modules: tuple[ModuleInfo, ...], nodes: list[Node]) -> tuple[ModuleInfo, ...]:
    """Each module's FLOPs: the sum over the nodes within its path, over all its calls."""
    within: Counter[str] = Counter()
    for node in nodes:
        if node.flops:
            for path in ("", *ids.ancestors(node.module_path)):
                within[path] += node.flops
    return tuple(replace(m, flops=within[m.path]) for m in modules)
