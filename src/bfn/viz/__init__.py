"""Pictures of the process: sample grids, evolution strips, animations, flow trajectories and training curves.

Every `save_*` function writes one file and returns its path; matplotlib is imported only inside the functions
that draw axes (Agg canvas, no display, pyplot untouched).

    >>> from bfn.models import from_pretrained
    >>> from bfn.viz import save_evolution, save_sampling_gif
    >>> model = from_pretrained("runs/mnist-discrete")
    >>> save_evolution(model, "evolution.png", n=4, steps=100, k=10)
    >>> save_sampling_gif(model, "sampling.gif", n=16, steps=100, k=50)
"""

from bfn.viz.animate import save_gif, save_sampling_gif, trajectory_frames
from bfn.viz.curves import save_training_curves
from bfn.viz.evolution import (
    Trajectory,
    chosen_steps,
    evolution_image,
    evolution_plot,
    record_sampling,
    save_evolution,
    save_trajectory_evolution,
)
from bfn.viz.grid import make_grid, save_model_grid, save_sample_grid, to_pil, to_unit_interval
from bfn.viz.guidance import guided_samples, save_guidance_grid
from bfn.viz.plots import figure_to_image, save_sample_plot
from bfn.viz.progress import save_progress
from bfn.viz.trajectories import bayesian_flow_paths, flow_density, save_flow_density, save_flow_trajectories

__all__ = [
    "Trajectory",
    "bayesian_flow_paths",
    "chosen_steps",
    "evolution_image",
    "evolution_plot",
    "figure_to_image",
    "guided_samples",
    "flow_density",
    "make_grid",
    "record_sampling",
    "save_evolution",
    "save_flow_density",
    "save_flow_trajectories",
    "save_gif",
    "save_guidance_grid",
    "save_model_grid",
    "save_progress",
    "save_sample_grid",
    "save_sample_plot",
    "save_sampling_gif",
    "save_training_curves",
    "save_trajectory_evolution",
    "to_pil",
    "to_unit_interval",
    "trajectory_frames",
]
