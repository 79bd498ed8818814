"""The Python API for trained runs: load one, adapt it to new tasks, act in Gymnasium.

    import adaptrl
    method = adaptrl.load_run("runs/demo/maml")      # the trained method and its config
    policy = method.adapt([0.3, -0.4], budget=1)     # one new task ψ, collecting its episodes
    action = policy.act(obs)                         # NumPy observation in, NumPy action out

`TrainedMethod.adapt` adapts to one task or many, either by collecting episodes through the
method's own sampler (``budget`` in the method's unit: gradient steps for MAML, context rounds
for PEARL, ...) or from episodes the caller recorded (``episodes=``). The result is a
`adaptrl.sampling.NumpyPolicy`. Mistakes in the arguments are `AdaptrlError`.
"""

from __future__ import annotations

import numpy as np

from .algos import Adapted, MetaAlgorithm
from .errors import AdaptrlError
from .runner import load_run as _load_run_parts
from .sampling import Episodes, NumpyPolicy, episodes_from_records


def load_run(run_dir, checkpoint=None) -> TrainedMethod:
    """The method trained in ``run_dir`` (``adaptrl train ... --out RUN_DIR``), from its latest
    checkpoint or the ``checkpoint`` file given."""
    algorithm, config, info = _load_run_parts(run_dir, checkpoint)
    return TrainedMethod(algorithm, config, info)


class TrainedMethod:
    """A trained method: ``algorithm`` (the `MetaAlgorithm`), its ``config``, its task
    ``family`` and ``info`` (run_dir, algo, family, seed, preset, iteration, elapsed_s,
    checkpoint)."""

    def __init__(self, algorithm: MetaAlgorithm, config, info: dict):
        self.algorithm, self.config, self.info = algorithm, config, info

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def family(self):
        return self.algorithm.family

    @property
    def budget_unit(self) -> str:
        return self.algorithm.budget_unit

    def __repr__(self) -> str:
        return (f"TrainedMethod({self.name} on {self.family.name}, iteration "
                f"{self.info['iteration']}, {self.info['run_dir']})")

    def adapt(self, tasks=None, budget: int | None = None, *, episodes=None, seed: int = 0
              ) -> NumpyPolicy:
        """The policy adapted to ``tasks``: ψ ``[k]`` (one task) or ``[T, k]``.

        budget: how much to adapt, in the method's `budget_unit` (default: the smallest nonzero
            of its default budgets; 0: the meta-learned policy itself). The method collects its
            own episodes of ``tasks`` with ``fast_batch`` episodes per unit.
        episodes: adapt from transitions you recorded instead (no budget then): for one task a
            list of episodes, each a dict of arrays ``obs``, ``action``, ``reward``, ``next_obs``
            and optionally ``terminated`` (see `adaptrl.sampling.episodes_from_records`); for T
            tasks a list of such lists; or an `Episodes`. ``tasks`` may then be omitted (the
            task-conditioned oracle needs it).
        seed: seeds the episodes collected here and the policy's action noise.
        """
        rng = np.random.default_rng(seed)
        family = self.family
        try:
            if episodes is not None:
                if budget is not None:
                    raise AdaptrlError("pass either a budget (the method collects its episodes) "
                                       "or recorded episodes, not both")
                recorded = self._recorded(episodes, tasks)
                adapted = self.algorithm.adapt_from(recorded, rng)
                num_tasks = recorded.num_tasks
            else:
                if tasks is None:
                    raise AdaptrlError("adapt() needs the tasks ψ to collect episodes of (or "
                                       "recorded episodes=)")
                checked = family.check_tasks(tasks)
                budget = self._default_budget() if budget is None else int(budget)
                adapted: Adapted = self.algorithm.adapt(checked, [budget], rng)[0]
                num_tasks = len(checked)
        except ValueError as err:  # the layers below report argument mistakes as ValueError
            raise AdaptrlError(str(err)) from None
        return NumpyPolicy(adapted.policy, num_tasks, family.obs_dim, family.act_dim,
                           family.discrete_actions, seed=seed,
                           info={"samples": adapted.samples, "seconds": adapted.seconds})

    def _default_budget(self) -> int:
        budgets = [b for b in self.algorithm.default_budgets if b > 0]
        return min(budgets) if budgets else 0

    def _recorded(self, episodes, tasks) -> Episodes:
        family = self.family
        if isinstance(episodes, Episodes):
            return episodes
        if not isinstance(episodes, (list, tuple)) or not episodes:
            raise AdaptrlError("episodes= takes a non-empty list of recorded episodes (dicts of "
                               "arrays), a list of such lists (one per task), or an Episodes")
        per_task = [list(episodes)] if isinstance(episodes[0], dict) else \
            [list(task_episodes) for task_episodes in episodes]
        if tasks is None:  # unknown ψ: methods that read it refuse NaN
            psi = np.full((len(per_task), family.task_dim), np.nan)
        else:
            psi = family.check_tasks(tasks)
            if len(psi) != len(per_task):
                raise AdaptrlError(f"{len(psi)} task(s) given for the recorded episodes of "
                                   f"{len(per_task)} task(s)")
        return episodes_from_records(per_task, family.obs_dim, family.act_dim,
                                     family.discrete_actions, psi)
