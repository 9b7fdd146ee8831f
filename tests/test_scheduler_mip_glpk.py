"""The GLPK wrapper on programs whose answers are known by hand."""

import numpy as np

from scheduler.mip_glpk import solve_mip

INF = np.inf


def test_integer_knapsack_optimum():
    # max 5a + 4b + 3c  s.t. 2a + 3b + c ≤ 5, 4a + b + 2c ≤ 11, 3a + 4b + 2c ≤ 8, a, b, c ≥ 0 integer
    # optimum a = 2, b = 0, c = 1 (value 13); the LP relaxation is the same vertex, so also check a
    # program whose LP optimum is fractional below.
    c = -np.array([5.0, 4.0, 3.0])
    a = np.array([[2.0, 3.0, 1.0], [4.0, 1.0, 2.0], [3.0, 4.0, 2.0]])
    sol = solve_mip(c, a, np.full(3, -INF), np.array([5.0, 11.0, 8.0]), np.zeros(3), np.full(3, INF), np.ones(3))
    assert sol.status == 0 and sol.message == "optimal"
    assert np.allclose(sol.x, [2, 0, 1])


def test_fractional_relaxation_is_branched():
    # max x + y  s.t. 2x + 2y ≤ 3 (LP optimum 1.5, integer optimum 1), plus a continuous z ≤ 0.5 in the objective
    c = -np.array([1.0, 1.0, 1.0])
    a = np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    sol = solve_mip(
        c, a, np.full(2, -INF), np.array([3.0, 0.5]), np.zeros(3), np.array([5.0, 5.0, INF]), np.array([1, 1, 0])
    )
    assert sol.status == 0
    assert sol.x[0] + sol.x[1] == 1 and sol.x[2] == 0.5


def test_infeasible_program_says_so():
    # x ≥ 2 and x ≤ 1
    sol = solve_mip(
        np.array([1.0]), np.array([[1.0]]), np.array([2.0]), np.array([INF]), np.zeros(1), np.array([1.0]), np.ones(1)
    )
    assert sol.x is None and sol.status == 2
