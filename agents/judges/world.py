"""World judges: for the `shapes` world (configs/world/), rank candidates by how well each obeys
the prompt, read back from its frames (metrics/world.py: colour, shape, motion, background).
The weight-free stand-in for the paper's MLLM judges that, in this world, has a right answer.

Whatever criterion is drawn, the score is adherence to the prompt (criterion 7, content
relevance, is what this world can measure; the criterion is recorded with the judgement). Ties
keep candidate order, so the ranking is deterministic."""

from __future__ import annotations

import json

import numpy as np

from agents.judges.base import Judgement, check_candidates, criterion_text
from configs.errors import MoraError
from configs.judges import JudgeSpec


class WorldJudge:
    def __init__(self, spec: JudgeSpec):
        if spec.backend != "world":
            raise MoraError(f"judge {spec.name!r} is a {spec.backend} judge, not a world judge")
        self.spec = spec
        self.name = spec.name

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str = "",
             criterion_id: int = 7, metric_cache=None) -> Judgement:
        from metrics.world import LOOK, MOVE, adherence

        criterion = criterion_text(criterion_id)
        videos = check_candidates(candidates)
        weights = {"look": LOOK, "move": MOVE}[self.spec.world_weighting]
        scores = [adherence(prompt, video, weights) for video in videos]
        if scores[0] is None:
            raise MoraError(f"world judge {self.name!r} reads captions of the shapes world's "
                            f"grammar (configs/world/), not {prompt!r}")
        ranking = sorted(range(len(videos)), key=lambda i: (-scores[i], i))
        raw = json.dumps({"weighting": self.spec.world_weighting, "scores": scores,
                          "ranking": [i + 1 for i in ranking]}, sort_keys=True)
        return Judgement(judge=self.name, backend="world", criterion_id=int(criterion_id),
                         criterion=criterion, raw=raw, ranking=ranking, scores=scores)
