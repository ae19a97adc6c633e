"""Which targets make the exact top 10 of `mean` and `maxsim` on late_interaction.py's 100k space: real labels (its
first rows) or token-level combinations "<a> - <b>" (the rest)? 10 queries. ``python experiments/bench/late_truth_mix.py <real_vectors.py directory>``"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.late_interaction import load_real, space  # noqa: E402
from uwe_lightning.ranking.packed import EncodedTexts  # noqa: E402
from uwe_lightning.ranking.ranker import Ranker  # noqa: E402

torch.set_num_threads(2)
real_texts, real_tokens, queries = load_real(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/scale_vectors"))
texts, tokens = space(real_texts, real_tokens, 100_000)
n_real = len(real_texts)
lengths = torch.tensor([len(t) for t in tokens])
offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
print("real rows", n_real, "mean tokens: real", float(lengths[:n_real].float().mean()),
      "combined", float(lengths[n_real:].float().mean()))
for scorer in ("mean", "maxsim"):
    ranker = Ranker.from_pretrained("minilm", scorer=scorer, batch_size=256)
    full = (ranker.pack(tokens, "target") if ranker.pooled("target")
            else EncodedTexts(torch.cat(tokens), offsets, pooled=False, model_id=ranker._identity()))
    combined, tok = 0, []
    for q in queries[:10]:
        top = ranker.rank(ranker.pack([q], "query"), full, k=10)[1][0]
        combined += int((top >= n_real).sum())
        tok += lengths[top].tolist()
    print(scorer, "share of combinations in the exact top 10:", combined / 100,
          "mean tokens of the top 10:", sum(tok) / len(tok))
