"""The `shapes` zoo: diffusers pipelines trained on the `shapes` world (configs/world/), so that
on a CPU an agent's output shows what its prompt asked, measurably (metrics/world.py).

architectures.py: the untrained pipelines (the tiny zoo's text side, VAEs and denoisers sized to
learn the world in minutes); training.py: how they learn it and how their rates are measured;
build.py: the script that makes agents/shapes/weights/; zoo.py: ``shapes:<name>`` -> that folder.
"""

from agents.shapes.zoo import SHAPES_MODELS, build_figures, shapes_model_dir

__all__ = ["SHAPES_MODELS", "build_figures", "shapes_model_dir"]
