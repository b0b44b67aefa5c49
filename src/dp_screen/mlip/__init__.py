"""Machine-learned interatomic potentials: MACE models, batched relaxation, fine-tuning. No workflow imports."""
