"""Line plots: a crowded legend goes beside the axes; levels are drawn as horizontal lines."""

from PIL import Image

from dinosae.evaluation.plots import line_plot


def _curves(count: int) -> dict:
    return {f"solver {i}": ([1, 2, 4, 8], [0.4 / (i + 1), 0.2, 0.1, 0.05 + i / 100]) for i in range(count)}


def _plot(path, count: int, **levels: float):
    return line_plot(path, _curves(count), title="t", xlabel="NFE", ylabel="d", logy=True, logx=True, levels=levels)


def _long_black_rows(path) -> int:
    """Rows of the image with over 200 dark grey pixels: the axes' top and bottom, and black levels (a dashed
    line of 1.7 pixels is anti-aliased grey)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        pixels = rgb.load()
        return sum(1 for y in range(height) if sum(_dark_grey(pixels[x, y]) for x in range(width)) > 200)


def _dark_grey(rgb: tuple[int, int, int]) -> bool:
    return max(rgb) - min(rgb) < 10 and sum(rgb) < 450


def test_a_crowded_legend_goes_beside_the_axes(tmp_path):
    with Image.open(_plot(tmp_path / "few.png", 2)) as few, Image.open(_plot(tmp_path / "many.png", 5)) as many:
        assert few.size == (660, 420) and many.size == (1020, 420)  # 5.5 and 8.5 inches at 120 dpi


def test_a_level_is_a_horizontal_line_across_the_axes(tmp_path):
    plain, level = _plot(tmp_path / "plain.png", 5), _plot(tmp_path / "level.png", 5, floor=0.03)
    assert _long_black_rows(level) > _long_black_rows(plain) >= 2
