"""Training cells: 80-atom supercells of starting structures with random displacements and strain.

As in the seed's training set (340 compositions x 80-atom cells, every atom perturbed), each cell is the 80-atom
supercell of a starting structure with every atom displaced by a Gaussian vector (standard deviation
``displacement`` per Cartesian component) and the cell strained by a random symmetric strain (each component
uniform in [-strain, strain]). A seed makes the perturbations reproducible.
"""

from __future__ import annotations

import itertools

import numpy as np
from pymatgen.core import Structure

from dp_screen.errors import InputError

TRAINING_ATOMS = 80


def supercell_80(structure: Structure, n_atoms: int = TRAINING_ATOMS) -> Structure:
    """The most compact diagonal supercell of ``structure`` with exactly ``n_atoms`` atoms."""
    n = len(structure)
    if n_atoms % n:
        raise InputError(
            f"a {n}-atom cell cannot make an {n_atoms}-atom supercell ({n_atoms} is not a multiple of {n})"
        )
    k = n_atoms // n
    best, best_score = None, np.inf
    lengths = np.array(structure.lattice.abc)
    for f in itertools.product(range(1, k + 1), repeat=3):
        if f[0] * f[1] * f[2] != k:
            continue
        sizes = lengths * np.array(f)
        score = sizes.max() / sizes.min()
        if score < best_score - 1e-9:
            best, best_score = f, score
    return structure.make_supercell(best, in_place=False)


def perturbed_cells(
    structure: Structure,
    n_cells: int,
    displacement: float = 0.1,
    strain: float = 0.03,
    seed: int = 0,
    n_atoms: int = TRAINING_ATOMS,
) -> list[Structure]:
    """``n_cells`` perturbed ``n_atoms``-atom supercells of ``structure`` (reproducible for a given seed)."""
    if displacement < 0 or strain < 0 or strain >= 0.5:
        raise InputError(f"displacement {displacement} must be >= 0 and strain {strain} in [0, 0.5)")
    base = supercell_80(structure, n_atoms)
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n_cells):
        eps = rng.uniform(-strain, strain, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        lattice = base.lattice.matrix @ (np.eye(3) + eps)
        cart = base.frac_coords @ lattice + rng.normal(0.0, displacement, size=(len(base), 3))
        cells.append(Structure(lattice, base.species, cart, coords_are_cartesian=True))
    return cells
