"""Thyme (Qwen2.5-VL weights, `Kwai-Keye/Thyme-RL`) in its own protocol: Python in `<code>`, results inside
the same assistant turn as `<sandbox_output>`.

Source: github.com/yfzhang114/Thyme at commit b9285b7a0c5f1effcd9908ec5936fae47fc592e5:
eval/VLMEvalKit/vlmeval/vlm/thyme/utils.py (REASONING_SYS_PROMPT, SIMPLE_SYS_PROMPT,
`generate_prompt_final_qa`, SPECIAL_STRING_LIST), eval/VLMEvalKit/vlmeval/vlm/thyme/model.py
(`generate_inner_transformers`: the loop), eval/VLMEvalKit/vlmeval/vlm/thyme/sandbox.py (the sandbox:
ImagePathTransformer, CropCoordinateTransformer, OpenCVNamespaceTransformer, the output-path rules),
swift/trainers/rlhf_trainer/grpo_trainer.py (a failed block answered inside `<sandbox_output>`); the
scripted code is the README.md example's (crop with numpy slicing, `cv2.resize` by 2, `cv2.imwrite` under
`/mnt/data/temp_processed_images/`, print the path) on the episode's box.

As the evaluation does: the system prompt is REASONING_SYS_PROMPT; the question is
`generate_prompt_final_qa(text, path)` (it starts with a literal "<image>" after the image itself, and
gives the image's path and size); images are sized by qwen_vl_utils' defaults (smart_resize, bicubic);
generation stops after `</code>` or `</answer>`; a turn with `</answer>` ends the episode, a turn with a
`<code>` block is a call, any other turn ends it; the code runs in this package's interpreter
(`toolshift.episodes.image_code`, never executed) with the sandbox's own pre-passes (the `image_path`
literal replaced by the given path, coordinate literals clamped to the image with a 64-pixel minimum,
`cv.`/`cv3.`/`cv4.` read as `cv2.`) and its output rules (the `processed_path` variable, then image paths
printed under the output directory, else the printed text); the result continues the **same assistant
turn**: `<sandbox_output>` + image(s) or text + `</sandbox_output>`, and generation goes on from there. The
block's names stay bound for the next block (the sandbox's execution context).

A block the interpreter refuses or that fails is answered as Thyme's RL rollout answers a failed block:
its error inside `<sandbox_output></sandbox_output>` (the evaluation instead resamples the turn at
temperature 1, which greedy decoding cannot follow). Deviations: autopep8 is not run on the code; OpenCV's
resampling is Pillow's (see `toolshift.episodes.image_code_lib`). Conditions without tools get
SIMPLE_SYS_PROMPT and the question without the path and size lines and without "including any code".
Unverified: the reasoning text around the scripted code, and the whitespace between it and `<code>`.
"""

from __future__ import annotations

import ast
import re
from pathlib import PurePosixPath
from typing import Any

from toolshift.episodes.image_code import Sandbox, run_image_code
from toolshift.models.adapters.base import ChatMessage, episode_image_size
from toolshift.models.adapters.imaging import smart_resized
from toolshift.models.adapters.native import (
    IMAGE_PATH_KEY,
    CallRejected,
    NativeAdapter,
    Observation,
    Session,
    TurnRead,
    WrittenCall,
)

THYME_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "\n"
    "Solve the following problem step by step, and optionally write Python code for image "
    "manipulation to enhance your reasoning process. The Python code will be executed by an "
    "external sandbox, and the processed image or result (wrapped in "
    "<sandbox_output></sandbox_output>) can be returned to aid your reasoning and help you "
    "arrive at the final answer.\n"
    "\n"
    "**Reasoning & Image Manipulation (Optional but Encouraged):**\n"
    "    * You have the capability to write executable Python code to perform image "
    "manipulations (e.g., cropping to a Region of Interest (ROI), resizing, rotation, "
    "adjusting contrast) or perform calculation for better reasoning.\n"
    "    * The code will be executed in a secure sandbox, and its output will be provided back "
    "to you for further analysis.\n"
    "    * All Python code snippets **must** be wrapped as follows:\n"
    "    <code>\n"
    "    ```python\n"
    "    # your code.\n"
    "    ```\n"
    "    </code>\n"
    "    * At the end of the code, print the path of the processed image (processed_path) or "
    "the result for further processing in a sandbox environment."
)
THYME_SIMPLE_SYSTEM_PROMPT = "You are a helpful assistant."
THYME_QUESTION = (
    "<image>\n{question}\n\n"
    '### User Image Path:** "{path}"\n'
    '### User Image Size:** "{size}"\n\n'
    "### **Output Format (strict adherence required):**\n\n"
    "<think>Your detailed reasoning process, including any code, should go here.</think>\n"
    "<answer>Your final answer to the user's question goes here.</answer>\n"
)
"""`generate_prompt_final_qa`'s prompt."""
THYME_TOOL_PARTS: tuple[str, ...] = (
    '### User Image Path:** "',
    '### User Image Size:** "',
    ", including any code,",
)
"""The tool parts of the question: the path and size lines (whole lines) and ", including any code,"."""
THYME_OUTPUT_DIR = "/mnt/data/temp_processed_images/"
THYME_REASONING = (
    "The text in the image is what I need to read. Cropping and zooming in on it will make it easier to "
    "read.\nHere is the Python code to crop and zoom in on the region:\n\n"
)
THYME_CODE = """import cv2
import os
import numpy as np
from uuid import uuid4

# Load the image
image_path = "{path}"
image = cv2.imread(image_path)

# Define the coordinates for the region to zoom in on
x1, y1, x2, y2 = {x1}, {y1}, {x2}, {y2}

# Crop the image based on the defined coordinates
cropped_image = image[y1:y2, x1:x2]

# Apply a zoom factor to enhance the cropped region
zoom_factor = 2
resized_image = cv2.resize(cropped_image, None, fx=zoom_factor, fy=zoom_factor, interpolation=cv2.INTER_CUBIC)

# Save the processed image with a random suffix
random_suffix = str(uuid4())[:8]
processed_filename = f"{stem}_{{random_suffix}}.jpg"
processed_path = os.path.join("{output}", processed_filename)
cv2.imwrite(processed_path, resized_image)

# Print the path of the saved cropped image for further processing
print(processed_path)"""
"""The README.md example's code, on the episode's image path, box and file stem."""
_CODE = re.compile(r"<code>\s*(?:```\s*)?(?:python\s*)?([\s\S]*?)\s*(?:```\s*)?</code>", re.IGNORECASE)
_PRINTED = re.compile(rf"({re.escape(THYME_OUTPUT_DIR)}[^\s'\"]+\.(?:jpg|jpeg|png|bmp|gif|tiff))")
MIN_CROP_DIMENSION = 64
COORD_NAMES = ("crop_box", "bbox", "box", "coordinates", "coords", "crop_coords") + tuple(
    f"{side}_crop_coords" for side in ("left", "right", "top", "bottom")
)
"""The variable names CropCoordinateTransformer clamps a 4-tuple literal under."""


def clamp_box(box: list[float], width: int, height: int) -> list[float]:
    """The sandbox's `_clamp_coordinates`: ordered, inside the image, at least 64 pixels on a side."""
    x1, x2 = min(box[0], box[2]), max(box[0], box[2])
    y1, y2 = min(box[1], box[3]), max(box[1], box[3])
    out = []
    for lo, hi, size in ((x1, x2, float(width)), (y1, y2, float(height))):
        lo = min(max(0.0, lo), size - 1.0 if size > 0 else 0.0)
        hi = min(max(0.0, hi), size)
        if lo >= hi and size > 0:
            lo = max(0.0, hi - 1.0)
            if hi <= lo:
                hi = min(size, lo + 1.0)
        if size > 0 and hi - lo < MIN_CROP_DIMENSION:
            if size < MIN_CROP_DIMENSION:
                lo, hi = 0.0, size
            else:
                hi = lo + MIN_CROP_DIMENSION
                if hi > size:
                    hi, lo = size, max(0.0, size - MIN_CROP_DIMENSION)
        if size > 0 and lo >= hi:
            hi = min(size, lo + 1.0)
        out.append((lo, hi))
    (fx1, fx2), (fy1, fy2) = out
    return [fx1, fy1, fx2, fy2]


class ThymeSandboxPass(ast.NodeTransformer):
    """Thyme's sandbox pre-passes on the parsed code (ImagePathTransformer, CropCoordinateTransformer
    cases 1 and 2, OpenCVNamespaceTransformer); its slicing case 3 tests `ast.Index`, which Python 3.9+
    never produces, so it never applies there either."""

    def __init__(self, path: str, width: int, height: int) -> None:
        self.path, self.width, self.height = path, width, height

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if isinstance(target, ast.Name) and target.id == "image_path":
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value != self.path:
                node.value = ast.Constant(self.path)
        named = isinstance(target, ast.Name) and target.id in COORD_NAMES
        unpacked = (
            isinstance(target, ast.Tuple)
            and len(target.elts) == 4
            and all(isinstance(e, ast.Name) for e in target.elts)
            and any(
                e.id.lower() in ("x1", "y1", "x2", "y2", "left", "top", "right", "bottom")
                for e in target.elts
            )
        )
        if (named or unpacked) and isinstance(value, ast.Tuple) and len(value.elts) == 4:
            numbers = [e.value if isinstance(e, ast.Constant) else None for e in value.elts]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
                clamped = clamp_box([float(v) for v in numbers], self.width, self.height)
                if [round(v) for v in clamped] != [round(v) for v in numbers]:
                    value.elts = [ast.Constant(int(round(v))) for v in clamped]
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in ("cv", "cv4", "cv3", "CV"):
            node.value = ast.Name("cv2", ast.Load())
        return self.generic_visit(node)


class ThymeAdapter(NativeAdapter):
    """Thyme: code in `<code>`, its result inside the same assistant turn (see the module docstring)."""

    family = "thyme"
    tool_name = "python"
    protocol_source = (
        "yfzhang114/Thyme: eval/VLMEvalKit/vlmeval/vlm/thyme/ @ b9285b7a0c5f1effcd9908ec5936fae47fc592e5"
    )
    stop_strings = ("</code>", "</answer>")
    tool_format_parts = THYME_TOOL_PARTS

    def system_prompt(self, framed: bool) -> str:
        return THYME_SYSTEM_PROMPT if framed else THYME_SIMPLE_SYSTEM_PROMPT

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        width, height = episode_image_size(meta, "Thyme question")
        full = THYME_QUESTION.format(question=text, path=meta.get(IMAGE_PATH_KEY), size=f"{width}x{height}")
        if framed:
            return full
        lines = [line for line in full.split("\n") if not line.startswith(THYME_TOOL_PARTS[:2])]
        return "\n".join(lines).replace("\n\n\n", "\n\n", 1).replace(THYME_TOOL_PARTS[2], "")

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        return smart_resized(image)

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        path = str(meta.get(IMAGE_PATH_KEY))
        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        stem = PurePosixPath(path).stem
        code = THYME_CODE.format(path=path, x1=x1, y1=y1, x2=x2, y2=y2, stem=stem, output=THYME_OUTPUT_DIR)
        return WrittenCall("python", {"code": code})

    def turn_text(self, call: WrittenCall) -> str:
        return f"<think>{THYME_REASONING}<code>\n```python\n{call.arguments['code']}\n```\n</code>"

    def read_turn(self, text: str, session: Session) -> TurnRead:
        if "</answer>" in text:
            return TurnRead(final=True)
        match = _CODE.search(text)
        if match is None:
            return TurnRead(final=True)
        return TurnRead(calls=[WrittenCall("python", {"code": match.group(1).strip()}, match.group(0))])

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        code = str(call.arguments.get("code", ""))
        width, height = session.original.size
        sandbox = Sandbox(readable={session.image_path: session.original}, output_dir=THYME_OUTPUT_DIR)
        before = session.env
        result = run_image_code(
            code, sandbox, env=before, transform=ThymeSandboxPass(session.image_path, width, height).visit
        )
        if result.error is not None:
            raise CallRejected(result.error)
        session.env = result.env
        session.crops = [list(c) for c in result.crops]
        paths: list[str] = []
        processed = result.env.get("processed_path")
        if (
            "processed_path" not in before
            and isinstance(processed, str)
            and processed.startswith(THYME_OUTPUT_DIR)
        ):
            if processed not in result.saved:
                raise CallRejected(
                    f"'processed_path' variable set to '{processed}', but file does not exist."
                )
            paths.append(processed)
        printed = result.stdout.strip()
        found = _PRINTED.findall(printed)
        paths += [p for p in found if p in result.saved and p not in paths]
        if printed and not paths and found and len(found) == len(result.saved):
            paths = list(result.saved)
        if paths:
            images = [smart_resized(result.saved[p]) for p in paths]
            session.observations.extend(images)
            return Observation(images=images)
        if printed and THYME_OUTPUT_DIR not in code:
            return Observation(text=printed)
        raise CallRejected("Path/result output error, unable to match save path")

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation:
        return Observation(
            error=f"Sandbox for {PurePosixPath(session.image_path).stem}: Code execution failed: {reason}"
        )

    def add_assistant(self, messages: list[ChatMessage], content: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == "assistant":  # generation continued the same turn
            messages[-1]["content"].extend(content)
        else:
            messages.append({"role": "assistant", "content": content})

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        if obs.error is not None:
            inner = [{"type": "text", "text": obs.error}]
        elif obs.trail is not None:
            inner = [{"type": "text", "text": obs.trail}]
        elif obs.images:
            inner = list(obs.images)
        else:
            inner = [{"type": "text", "text": obs.text}]
        parts = [
            {"type": "text", "text": "<sandbox_output>"},
            *inner,
            {"type": "text", "text": "</sandbox_output>"},
        ]
        self.add_assistant(messages, parts)

    def trail_text(self, call: WrittenCall, meta: dict[str, Any]) -> str:
        from toolshift.episodes.build import text_trail_line

        bbox = meta.get("bbox") or []
        return text_trail_line([int(round(v)) for v in bbox], "python")

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        return code_call(call, session)


def code_call(call: WrittenCall, session: Session) -> dict[str, Any]:
    """The structured form of a code block: `python` with its code and, where it cropped the attack image
    once, that box in pixels (`bbox`)."""
    arguments: dict[str, Any] = {"code": str(call.arguments.get("code", ""))}
    if len(session.crops) == 1:
        arguments["bbox"] = list(session.crops[0])
    return {"name": "python", "arguments": arguments}
