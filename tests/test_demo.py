"""The end-to-end demo at tiny sizes, in-process: it serves every request through the backends,
meets its accuracy bounds, and reports a violation when the bounds are too tight."""
import contextlib
import io
import unittest

from util import seeded_rng
from fastattn import cache, demo

TINY = ["--device", "cpu", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--head-dim", "64",
        "--block-size", "16", "--vocab", "128", "--requests", "6", "--prefixes", "1", "--prefix-len", "20",
        "--suffix-len", "3", "30", "--new-tokens", "4", "--max-batch", "3", "--chunk", "24", "--arrival-gap", "1"]


class TestDemo(unittest.TestCase):
    def test_main_passes_its_bounds_and_prints_a_table_per_cache_type(self):
        seed = str(seeded_rng(self).integers(1000))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            status = demo.main(TINY + ["--seed", seed])
        self.assertEqual(status, 0, out.getvalue())
        for quant in cache.QUANT_TYPES:
            self.assertIn(f"\n{quant}: ", out.getvalue())

    def test_serving_and_the_accuracy_check(self):
        for prefill_path in ("paged", "gather"):
            with self.subTest(prefill_path=prefill_path):
                seed = str(seeded_rng(self, prefill_path).integers(1000))
                args = demo.parse_args(TINY + ["--seed", seed, "--prefill-path", prefill_path])
                with contextlib.redirect_stderr(io.StringIO()):
                    runners, stats = demo.run(args)
                self.assertGreater(stats["prefix_hit_tokens"], 0, "no request hit the prefix cache")
                self.assertGreater(stats["mixed_steps"], 0, "no step mixed prefill and decode")
                self.assertEqual([r.quant for r in runners][0], "none")
                for runner in runners[1:]:
                    self.assertEqual(runner.predicted, args.requests * args.new_tokens)
                    for worst, mean in runner.error_summary():
                        self.assertGreater(mean, 0.0, f"{runner.quant}: identical to the bf16 cache?")
                self.assertEqual(demo.violations(runners), [])
                too_tight = demo.violations(runners, {q: 1e-9 for q in demo.MEAN_ERROR_BOUNDS}, max_bound=1e-9)
                self.assertEqual(len(too_tight), 2 * args.layers * (len(runners) - 1))


if __name__ == "__main__":
    unittest.main()
