"""Turn a failed export into one message naming the module and the operation that could not be exported.

torch.export runs the model's Python code on symbolic tensors, so a failure there raises inside
the module that could not be recorded: the innermost frame of the traceback whose ``self`` is a
submodule of the exported model names it. The ONNX translation fails later, on a node of the
recorded graph: the node's ``nn_module_stack`` names the module that produced it.
"""

from __future__ import annotations

import re
import traceback
from typing import Optional

from torch import nn

__all__ = ["describe_export_failure", "describe_onnx_failure"]

_HOW_TO = "docs/deployment.md ('Making a plugin exportable') says how to write it so that it exports"


def _innermost_module(exc: BaseException, root: nn.Module) -> Optional[tuple[str, str]]:
    """(dotted path, class name) of the innermost submodule of ``root`` running when ``exc`` was raised."""
    names = {id(m): name for name, m in root.named_modules()}
    found = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            owner = frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                found = (names[id(owner)], type(owner).__name__)
        exc = exc.__cause__ or exc.__context__
    return found


def _user_line(exc: BaseException) -> str:
    """The innermost traceback line outside torch's own code (where the model called torch)."""
    line = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        path = frame.f_code.co_filename
        if "/torch/" in path or "/torchvision/" in path or "/framework/export/" in path:
            continue
        source = (traceback.linecache.getline(path, lineno) or "").strip()  # type: ignore[attr-defined]
        line = f"{path}:{lineno} ({source})" if source else f"{path}:{lineno}"
    return line


def _operation(exc: BaseException) -> str:
    """What could not be recorded, from the exception's message."""
    text = str(exc)
    match = re.search(r"data-dependent expression ([^\n]+?) \(unhinted", text)
    if match or "GuardOnDataDependentSymNode" in type(exc).__name__:
        where = _user_line(exc)
        what = f" ({match.group(1)})" if match else ""
        return (f"a Python branch or number read from tensor values{what} at {where}: a graph runs the same "
                "operations for every input")
    match = re.search(r"operator ([\w.:]+)", text)
    if match:
        return f"operator {match.group(1)}: {text.splitlines()[0][:300]}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:300]} at {_user_line(exc)}"


def describe_export_failure(exc: BaseException, root: nn.Module) -> str:
    """One message for a torch.export failure of ``root``: the module, the operation, where to read on."""
    module = _innermost_module(exc, root)
    where = f"module {module[0] or '<root>'} ({module[1]})" if module else f"module {type(root).__name__}"
    return f"cannot export {where} with torch.export: {_operation(exc)}. {_HOW_TO}"


def describe_onnx_failure(exc: BaseException, program) -> str:
    """One message for an ONNX translation failure of the ExportedProgram ``program``."""
    text = "\n".join(str(e) for e in _chain(exc))
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>", text)
    node_name = re.search(r"Error when translating node %(\w+)", text)
    operation = f"{op.group(1)}.{op.group(2)}" if op else None
    module = None
    if node_name is not None:
        for node in program.graph.nodes:
            if node.name == node_name.group(1):
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path, cls = list(stack.values())[-1]
                    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
                    module = (path.removeprefix("L['self'].").removeprefix("model.") if isinstance(path, str) else str(path),
                              cls_name.rsplit(".", 1)[-1])
                operation = operation or str(node.target)
                break
    where = f"module {module[0]} ({module[1]})" if module else "the model"
    what = f"operator {operation} has no ONNX translation" if operation else text.strip().splitlines()[-1][:300]
    return f"cannot export {where} to ONNX: {what}. {_HOW_TO}"


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
