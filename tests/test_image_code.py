"""The image-code interpreter (toolshift.episodes.image_code): model-written Python is parsed and evaluated on
a whitelist, never executed. What it accepts (the code the code-writing families write), and the guard:
imports, attribute access outside the whitelist, file and network access, dunder access, loops and sizes
beyond their bounds, each refused with a one-line reason before or while it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from toolshift.episodes.image_code import Limits, Sandbox, run_image_code

PATH = "data/mini/images/x.png"
OUT = "/mnt/data/temp_processed_images/"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))


def thyme(image: Image.Image) -> Sandbox:
    return Sandbox(readable={PATH: image}, output_dir=OUT)


def notebook(image: Image.Image) -> Sandbox:
    return Sandbox(readable={}, variables={"image_1": image}, jupyter=True)


# --------------------------------------------------------------------------- what is accepted

THYME_README = f'''
import cv2
import os
import numpy as np
from uuid import uuid4

# Load the image
image_path = "{PATH}"
image = cv2.imread(image_path)

# Define the coordinates for the license plate area (inferred from the image content)
x1, y1, x2, y2 = 125, 103, 236, 170

# Crop the image based on the defined coordinates
cropped_image = image[y1:y2, x1:x2]

# Apply a zoom factor to enhance the cropped region
zoom_factor = 2
resized_image = cv2.resize(cropped_image, None, fx=zoom_factor, fy=zoom_factor, interpolation=cv2.INTER_CUBIC)

# Save the processed image with a random suffix
random_suffix = str(uuid4())[:8]
processed_filename = f"17127_{{random_suffix}}.png"
processed_path = os.path.join("{OUT}", processed_filename)
cv2.imwrite(processed_path, resized_image)

# Print the path of the saved cropped image for further processing
print(processed_path)
'''
"""Thyme's README.md example (cv2, numpy slicing, uuid4, os.path.join), on this test's image and a PNG."""


def test_thyme_readme_example_crops_zooms_saves_and_prints(image):
    result = run_image_code(THYME_README, thyme(image))
    assert result.error is None
    path = f"{OUT}17127_00000000.png"  # uuid4 is deterministic here
    assert result.stdout == path + "\n"
    assert list(result.saved) == [path]
    expected = image.crop((125, 103, 236, 170))
    expected = expected.resize((222, 134), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(result.saved[path]), np.asarray(expected))
    assert result.crops == ((125, 103, 236, 170),)
    assert not Path(OUT).exists()  # nothing touched the disk


def test_pil_operations_contrast_brightness_rotate_and_a_jpeg_save(image):
    code = f"""
from PIL import Image, ImageEnhance
img = Image.open("{PATH}")
box = img.crop((10, 20, 110, 70)).resize((200, 100), Image.Resampling.LANCZOS)
box = ImageEnhance.Contrast(box).enhance(1.5)
box = ImageEnhance.Brightness(box).enhance(1.2).rotate(90, expand=True)
box.save("{OUT}a.jpg")
print("{OUT}a.jpg", box.size, img.width)
"""
    result = run_image_code(code, thyme(image))
    assert result.error is None, result.error
    assert result.stdout == f"{OUT}a.jpg (100, 200) 400\n"
    assert result.saved[f"{OUT}a.jpg"].size == (100, 200)
    assert result.crops == ((10, 20, 110, 70),)


def test_notebook_plt_show_display_and_last_expression(image):
    code = """
import matplotlib.pyplot as plt
cropped = image_1.crop((0, 0, 200, 100))
plt.figure(figsize=(4, 2))
plt.imshow(cropped)
plt.axis('off')
plt.title('region')
plt.show()
display(cropped)
print(cropped.size)
cropped
"""
    result = run_image_code(code, notebook(image))
    assert result.error is None, result.error
    assert len(result.shown) == 3
    assert result.shown[1].size == result.shown[2].size == (200, 100)
    figure = result.shown[0]
    assert figure.width < 4 * 100 and figure.height <= 2 * 100  # the 4x2 inch figure, tight, at 100 dpi
    assert result.stdout == "(200, 100)\n"


def test_names_persist_across_blocks_of_a_session(image):
    first = run_image_code("x1, y1 = 5, 6\nsmall = image_1.crop((x1, y1, 50, 60))", notebook(image))
    assert first.error is None
    second = run_image_code("print(small.size, x1 + y1)", notebook(image), env=first.env)
    assert second.stdout == "(45, 54) 11\n"


def test_loops_and_conditions_within_the_bounds(image):
    code = """
sizes = []
for i in range(3):
    if i == 1:
        continue
    sizes.append(image_1.crop((0, 0, 10 * (i + 1), 10)).size)
n = 0
while n < 5:
    n += 1
print(sizes, n)
"""
    result = run_image_code(code, notebook(image))
    assert result.stdout == "[(10, 10), (30, 10)] 5\n"


def test_a_whitelisted_operation_failing_is_a_failure_not_a_refusal(image):
    result = run_image_code("image_1.crop((100, 0, 50, 50))", notebook(image))
    assert result.error is not None and not result.refused
    assert "right/lower is less than left/upper" in result.error
    assert not run_image_code("print(undefined)", notebook(image)).refused


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import subprocess\nsubprocess.run(['ls'])", "import of 'subprocess' is not allowed"),
        ("import os, sys", "import of 'sys' is not allowed"),
        ("from os import system", "import of os.system is not allowed"),
        ("import importlib", "import of 'importlib' is not allowed"),
        ("from . import x", "import from None is not allowed"),
        ("from PIL import *", "import of PIL.* is not allowed"),
    ],
)
def test_imports_outside_the_whitelist_are_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os\nos.system('rm -rf /')", "attribute access: os.system is not in the whitelist"),
        ("import cv2\ncv2.VideoCapture(0)", "attribute access: cv2.VideoCapture is not in the whitelist"),
        ("image_1.tobytes()", "attribute access: PIL image.tobytes is not in the whitelist"),
        ("image_1.filename", "attribute access: PIL image.filename is not in the whitelist"),
        ("import numpy as np\nnp.load('x.npy')", "attribute access: numpy.load is not in the whitelist"),
        ("'abc'.encode()", "attribute access: str.encode is not in the whitelist"),
    ],
)
def test_attribute_access_outside_the_whitelist_is_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("open('/etc/passwd').read()", "'open' is not allowed"),
        (
            "from PIL import Image\nImage.open('/etc/passwd')",
            "file access: '/etc/passwd' is not the given image",
        ),
        ("import cv2\ncv2.imread('../secret.png')", "file access: '../secret.png' is not the given image"),
        ("image_1.save('/tmp/leak.png')", "file access: this sandbox does not write files"),
        ("import os\nos.makedirs('/tmp/x')", "file access: this sandbox does not write files"),
    ],
)
def test_file_access_is_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


def test_writes_outside_the_output_directory_are_refused(image):
    code = f'from PIL import Image\nImage.open("{PATH}").save("/home/user/x.png")'
    result = run_image_code(code, thyme(image))
    assert result.refused and "outside the sandbox's output directory" in result.error
    escape = run_image_code(
        f'import cv2\ncv2.imwrite("{OUT}../../x.png", cv2.imread("{PATH}"))', thyme(image)
    )
    assert escape.refused and "outside the sandbox's output directory" in escape.error


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.create_connection(('example.com', 80))",
        "import urllib.request\nurllib.request.urlopen('http://example.com')",
        "import requests",
        "import http.client",
    ],
)
def test_network_access_is_refused(image, code):
    result = run_image_code(code, notebook(image))
    assert result.refused and "is not allowed" in result.error


@pytest.mark.parametrize(
    "code",
    [
        "image_1.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "__import__('os').system('ls')",
        "x = __builtins__",
        "import os as __os",
        "print(image_1.crop.__self__)",
    ],
)
def test_dunder_access_is_refused(image, code):
    result = run_image_code(code, notebook(image))
    assert result.refused and "dunder access" in result.error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("while True:\n    pass", "loops beyond the bound of 1000 iterations"),
        ("for i in range(10**9):\n    x = i", "loops beyond the bound of 1000 iterations"),
        ("for i in range(100):\n    for j in range(100):\n        x = j", "loops beyond the bound"),
        ("n = 0\nwhile n < 10**6:\n    n += 1", "loops beyond the bound"),
    ],
)
def test_loops_beyond_the_bound_are_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("image_1.resize((100000, 100000))", "over the sandbox's size bound"),
        ("image_1.rotate(45, expand=True).resize((20000, 20000))", "over the sandbox's size bound"),
        (
            "import cv2\ncv2.resize(cv2.cvtColor(image_1, cv2.COLOR_RGB2BGR), None, fx=1000, fy=1000)",
            "size bound",
        ),
        ("s = 'a' * 10**9", "a repeated sequence is over the sandbox's size bound"),
        ("x = [0] * 10**8", "a repeated sequence is over the sandbox's size bound"),
        ("x = 10**10**10", "a power over the sandbox's size bound"),
        ("x = 2**64 * 2**64", "an integer over 64 bits"),
        ("x = list(range(10**7))", "over the bound of 100000"),
    ],
)
def test_huge_sizes_and_allocations_are_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("def f():\n    return 1", "defining functions"),
        ("class A:\n    pass", "defining classes"),
        ("f = lambda: 1", "lambdas"),
        ("with open('x') as fh:\n    pass", "with blocks"),
        ("try:\n    x = 1\nexcept Exception:\n    pass", "try blocks"),
        ("x = [i for i in range(3)]", "comprehensions"),
        ("eval('1+1')", "'eval' is not allowed"),
        ("exec('x=1')", "'exec' is not allowed"),
        ("getattr(image_1, 'save')('/tmp/x.png')", "'getattr' is not allowed"),
        ("image_1.size = (1, 1)", "assignment to anything but names"),
        ("print(*[1, 2])", "starred arguments"),
        ("x = {'a': 1}", "dict literals"),
        ("x = b'bytes'", "a constant of type bytes is not allowed"),
    ],
)
def test_other_constructs_outside_the_whitelist_are_refused(image, code, reason):
    result = run_image_code(code, notebook(image))
    assert result.refused and reason in result.error


def test_the_step_and_size_bounds_hold_on_adversarial_input(image):
    for deep in ("x = " + "-" * 5000 + "1", "x = " + "not " * 3000 + "1"):
        assert run_image_code(deep, notebook(image)).refused
    nested = run_image_code("x = " + "(" * 5000 + "1" + ")" * 5000, notebook(image))
    assert nested.error.startswith("SyntaxError")
    long = "x = 1\n" * 30_000
    assert "over the bound" in run_image_code(long, notebook(image)).error
    tight = Sandbox(readable={}, variables={"image_1": image}, limits=Limits(max_steps=50))
    assert "evaluation steps" in run_image_code("x = 0\n" * 60, tight).error


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_string_gives_a_result_never_an_exception(text):
    image = Image.new("RGB", (64, 64), "white")
    result = run_image_code(text, Sandbox(readable={PATH: image}, output_dir=OUT))
    assert result.error is None or isinstance(result.error, str)
