"""The README's embedding example is examples/embed_minimal.c, word for word."""
import re
import sys

readme, example = sys.argv[1], sys.argv[2]
shown = re.search(r"```c\n(.*?)```", open(readme).read(), re.S).group(1)
body = open(example).read().split("*/\n", 1)[1]
if shown != body:
    sys.exit("README.md's C example differs from examples/embed_minimal.c: update one from the other")
print("1 passed, 0 failed")
