"""The package's shape: no import cycles, every setting defined once, function-local imports only where
they are needed (heavy optional dependencies)."""

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import zeroi2v
from zeroi2v.config import ModelConfig

PACKAGE = Path(zeroi2v.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """zeroi2v module -> the zeroi2v modules it imports (anywhere in the file)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zeroi2v"):
                for alias in node.names:  # `from zeroi2v.data import build` may name a submodule
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("zeroi2v")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = imports()

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cycles = {m: sorted(graph[m]) for m in graph if m in reachable(m)}
    assert not cycles, cycles


def test_create_model_defaults_come_from_the_model_config():
    """A new model option is one ModelConfig field: create_model repeats no default."""
    params = inspect.signature(zeroi2v.create_model).parameters
    assert [p for p in params.values() if p.default is not inspect.Parameter.empty] == []
    model = zeroi2v.create_model(
        "vit_tiny_patch16_224", num_frames=2, num_classes=3, img_size=32, patch_size=16, depth=1
    )
    defaults = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        if f.name not in ("num_frames", "num_classes", "timm_kwargs", "backbone"):
            assert getattr(model.config, f.name) == getattr(defaults, f.name), f.name


def test_saved_model_config_is_the_dataclass(tmp_path):
    model = zeroi2v.create_model(
        "vit_tiny_patch16_224", num_frames=2, num_classes=3, img_size=32, patch_size=16, depth=1
    )
    zeroi2v.save_pretrained(model, tmp_path)
    saved = json.loads((tmp_path / "model.json").read_text())["config"]
    assert saved == dataclasses.asdict(model.config)
    assert zeroi2v.load_pretrained(tmp_path).config == model.config


def long_functions(limit: int = 80) -> list[str]:
    package = Path(zeroi2v.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(package)}:{node.name} ({lines} lines)")
    return found


def test_no_function_in_the_package_is_over_80_lines():
    """A function a reader takes in at once: split longer ones."""
    assert long_functions() == []
