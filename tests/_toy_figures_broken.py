"""A figure whose plot raises: make_figures must go on with the others and report it."""

NAME = "toy_broken"
TITLE = "Toy: a figure that fails"
STUDIES = ("toy_sum",)


def plot(data):
    raise ArithmeticError("deliberately broken")
