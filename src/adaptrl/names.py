"""The built-in method and task-family names, spelled out without importing torch.

`adaptrl --help`, `adaptrl train --help` and ``import adaptrl`` (which registers the Gymnasium
ids) read these lists, so they stay fast. `tests/test_cli.py` holds them equal to the registries
(`adaptrl.algos.ALGORITHMS`, `adaptrl.tasks.REGISTRY`); add a method or family to both.
"""

ALGORITHM_NAMES = ("maml", "fomaml", "reptile", "random", "pretrain", "oracle", "pearl", "flap",
                   "admrl", "mb-unif", "mb-gauss", "rl2", "snail", "grbal", "mb-mpc",
                   "mb-mpc-finetune")
"""The CLI names of the built-in methods, in registry order."""

METAWORLD_ML1_TYPES = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown",
    "button-press-topdown-wall", "button-press", "button-press-wall", "coffee-button",
    "coffee-pull", "coffee-push", "dial-turn", "disassemble", "door-close", "door-lock",
    "door-open", "door-unlock", "hand-insert", "drawer-close", "drawer-open", "faucet-open",
    "faucet-close", "hammer", "handle-press-side", "handle-press", "handle-pull-side",
    "handle-pull", "lever-pull", "pick-place-wall", "pick-out-of-hole", "pick-place",
    "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side",
    "peg-insert-side", "peg-unplug-side", "soccer", "stick-push", "stick-pull", "push",
    "push-wall", "push-back", "reach", "reach-wall", "shelf-place", "sweep-into", "sweep",
    "window-open", "window-close",
)
"""Meta-World's v3 task types (``reach`` for ``reach-v3``), in metaworld.env_dict's order:
one ``mw-ml1-<type>`` family each (the optional extra ``adaptrl[metaworld]``)."""

METAWORLD_FAMILIES = tuple(f"mw-ml1-{t}" for t in METAWORLD_ML1_TYPES) + ("mw-ml10", "mw-ml45")


def gym_name(family_name: str) -> str:
    """``cheetah-vel-hard`` → ``CheetahVelHard``; ``ant-dir-2d`` → ``AntDir2d``."""
    return "".join(part[:1].upper() + part[1:] for part in family_name.split("-"))


FAMILY_GYM_IDS = {
    "point-nav": "adaptrl/PointNav-v0",
    "point-nav-sq": "adaptrl/PointNavSq-v0",
    "cheetah-vel": "adaptrl/CheetahVel-v0",
    "cheetah-vel-pearl": "adaptrl/CheetahVelPearl-v0",
    "cheetah-vel-hard": "adaptrl/CheetahVelHard-v0",
    "cheetah-dir": "adaptrl/CheetahDir-v0",
    "ant-dir": "adaptrl/AntDir-v0",
    "ant-vel": "adaptrl/AntVel-v0",
    "ant-dir-2d": "adaptrl/AntDir2d-v0",
    "ant-dir-2d-hard": "adaptrl/AntDir2dHard-v0",
    "humanoid-dir": "adaptrl/HumanoidDir-v0",
    "ant-goal": "adaptrl/AntGoal-v0",
    "hopper-params": "adaptrl/HopperParams-v0",
    "walker-params": "adaptrl/WalkerParams-v0",
    "cheetah-crippled": "adaptrl/CheetahCrippled-v0",
    "cheetah-crippled-midway": "adaptrl/CheetahCrippledMidway-v0",
    "ant-crippled": "adaptrl/AntCrippled-v0",
    "hopper-2d": "adaptrl/Hopper2d-v0",
    "walker-2d": "adaptrl/Walker2d-v0",
    "ant-2d": "adaptrl/Ant2d-v0",
    "ant-3d": "adaptrl/Ant3d-v0",
    "cheetah-highdim": "adaptrl/CheetahHighdim-v0",
    "bandit-k5": "adaptrl/BanditK5-v0",
    "bandit-k10": "adaptrl/BanditK10-v0",
    "bandit-k50": "adaptrl/BanditK50-v0",
    "tabular-mdp": "adaptrl/TabularMdp-v0",
    "maze-small": "adaptrl/MazeSmall-v0",
    "maze-large": "adaptrl/MazeLarge-v0",
} | {name: f"adaptrl/{gym_name(name)}-v0" for name in METAWORLD_FAMILIES}
"""The built-in task families by name, with their Gymnasium ids, in registry order."""

FAMILY_NAMES = tuple(FAMILY_GYM_IDS)

FAMILY_HORIZONS = {name: 200 for name in FAMILY_NAMES} | {
    "point-nav": 100, "point-nav-sq": 100, "bandit-k5": 1, "bandit-k10": 1, "bandit-k50": 1,
    "tabular-mdp": 10, "maze-small": 250, "maze-large": 1000,
} | {name: 500 for name in METAWORLD_FAMILIES}
"""Each built-in family's episode length H: the ``max_episode_steps`` of its Gymnasium id."""


def register_gym_ids(gym_ids: dict[str, str] = FAMILY_GYM_IDS,
                     horizons: dict[str, int] = FAMILY_HORIZONS) -> list[str]:
    """Register ``{family name: Gymnasium id}`` with Gymnasium (idempotent), episodes cut at
    ``horizons[name]`` by Gymnasium's ``TimeLimit``; returns the ids. The entry points (the
    view, and the batched vector env of ``gym.make_vec(..., vectorization_mode=
    "vector_entry_point")``) are imported only when an environment is made."""
    import gymnasium as gym

    for name, gym_id in gym_ids.items():
        if gym_id not in gym.registry:
            gym.register(id=gym_id, entry_point="adaptrl.envs.gym_view:TaskEnv",
                         vector_entry_point="adaptrl.envs.gym_vector:TaskVectorEnv",
                         kwargs={"family": name}, max_episode_steps=horizons.get(name))
    return list(gym_ids.values())
