import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from features.decode import MAX_PIXELS, Decoded, _reduction, decode_gray, image_size, sniff_format, target_size
from features.exceptions import DecodeError


def _rgb(w=240, h=180):
    return cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_AREA)


def _ref_gray(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _jpeg(rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=kw.pop("quality", 92), **kw)
    return buf.getvalue()


def _cv_encode(ext, img):
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _pil_encode(fmt, img, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb():
    return _rgb()


# --------------------------------------------------------------------------
# sniffing

@pytest.mark.parametrize("ext, fmt", [
    (".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".tiff", "tiff"),
    (".webp", "webp"), (".ppm", "pnm"), (".jp2", "jp2"), (".ras", "ras"),
])
def test_sniff_and_decode_formats(rgb, ext, fmt):
    data = _cv_encode(ext, rgb[:, :, ::-1])
    assert sniff_format(data) == fmt
    assert image_size(data) == (240, 180)
    d = decode_gray(data)
    assert isinstance(d, Decoded)
    assert d.format == fmt
    assert (d.width, d.height) == (240, 180)
    assert d.gray.dtype == np.uint8 and d.gray.shape == (180, 240)
    assert d.gray.flags.c_contiguous
    tol = 6 if fmt in ("jpeg", "webp", "jp2") else 1
    assert np.abs(d.gray.astype(int) - _ref_gray(rgb)).mean() < tol


def test_decode_pgm_and_gif(rgb):
    gray = _ref_gray(rgb)
    d = decode_gray(_cv_encode(".pgm", gray))
    assert d.format == "pnm"
    np.testing.assert_array_equal(d.gray, gray)
    data = _pil_encode("GIF", Image.fromarray(gray))
    assert sniff_format(data) == "gif"
    d = decode_gray(data)
    assert d.format == "gif" and d.gray.shape == gray.shape
    assert np.abs(d.gray.astype(int) - gray).mean() < 2


def test_animated_gif_gives_first_frame():
    frames = [Image.fromarray(np.full((20, 30), v, np.uint8)) for v in (40, 200, 120)]
    data = _pil_encode("GIF", frames[0], save_all=True, append_images=frames[1:], duration=50)
    d = decode_gray(data)
    assert d.gray.shape == (20, 30)
    assert abs(int(d.gray.mean()) - 40) <= 2


@pytest.mark.parametrize("head, expected", [
    (b"", None), (b"%PDF-1.5\n", None), (b"hello, world\n", None),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "heic"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "avif"),
    (b"\x00\x00\x00\x1cftypmp42\x00\x00\x00\x00", None),
    (b"#?RADIANCE\n", "hdr"), (b"v/1\x01\x02\x00\x00\x00", "exr"),
    (b"P5\n3 2\n255\n", "pnm"), (b"P5x", None), (b"GIF89a", "gif"),
])
def test_sniff_format_headers(head, expected):
    assert sniff_format(head) == expected


# --------------------------------------------------------------------------
# refusals

@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image (starts with b'%PDF-1.4'"),
    (b"just some text in a file named photo.jpg\n", "not an image"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "unsupported format: heic"),
    (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n", "unsupported format: hdr"),
])
def test_refused_bytes(data, reason):
    with pytest.raises(DecodeError) as exc:
        decode_gray(data)
    assert str(exc.value).startswith(reason)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -2])
def test_truncated_jpeg(rgb, keep):
    data = _jpeg(rgb)
    cut = data[:keep] if keep < 0 else data[:int(len(data) * keep)]
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_gray(cut)
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_gray(cut, 60)


def test_truncated_jpeg_inside_header(rgb):
    data = _jpeg(rgb)
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_gray(data[:40])


def test_trailing_bytes_after_jpeg_are_ignored(rgb):
    data = _jpeg(rgb)
    d = decode_gray(data + b"\x00" * 50 + b"trailing garbage")
    np.testing.assert_array_equal(d.gray, decode_gray(data).gray)


def test_truncated_png(rgb):
    data = _cv_encode(".png", rgb)
    with pytest.raises(DecodeError, match="truncated PNG"):
        decode_gray(data[:len(data) // 2])


def test_corrupt_png_body(rgb):
    data = bytearray(_cv_encode(".png", rgb))
    data[100:400] = b"\x00" * 300  # destroys the compressed stream, keeps IEND
    with pytest.raises(DecodeError, match="PNG"):
        decode_gray(bytes(data))


def _with_jpeg_size(data, w, h):
    data = bytearray(data)
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, h, w)
    return bytes(data)


def _with_png_size(data, w, h):
    data = bytearray(data)
    struct.pack_into(">II", data, 16, w, h)
    return bytes(data)


@pytest.mark.parametrize("make", ["jpeg", "png", "gif", "bmp"])
def test_pixel_limit_from_header(rgb, make):
    if make == "jpeg":
        data = _with_jpeg_size(_jpeg(rgb), 60000, 60000)
    elif make == "png":
        data = _with_png_size(_cv_encode(".png", rgb), 100000, 90000)
    elif make == "gif":
        data = bytearray(_pil_encode("GIF", Image.fromarray(rgb[:, :, 0])))
        struct.pack_into("<HH", data, 6, 65535, 65535)
        data = bytes(data)
    else:
        data = bytearray(_cv_encode(".bmp", rgb))
        struct.pack_into("<ii", data, 18, 50000, -50000)
        data = bytes(data)
    with pytest.raises(DecodeError, match=r"too many pixels \(\d+x\d+"):
        decode_gray(data)


def test_max_pixels_argument(rgb):
    data = _jpeg(rgb)
    with pytest.raises(DecodeError, match="too many pixels"):
        decode_gray(data, max_pixels=240 * 180 - 1)
    assert decode_gray(data, max_pixels=240 * 180).gray.shape == (180, 240)
    assert MAX_PIXELS == 178_956_970


def test_zero_size_header(rgb):
    with pytest.raises(DecodeError, match="corrupt"):
        decode_gray(_with_jpeg_size(_jpeg(rgb), 0, 10))


@pytest.mark.parametrize("max_side", [0, -5, 2.5, True, "300"])
def test_bad_max_side(rgb, max_side):
    with pytest.raises((ValueError, TypeError)):
        decode_gray(_jpeg(rgb), max_side)


def test_bad_max_pixels(rgb):
    with pytest.raises(ValueError, match="max_pixels"):
        decode_gray(_jpeg(rgb), max_pixels=0)


# --------------------------------------------------------------------------
# the decoding policy

def test_png_named_jpeg_is_decoded_as_png(tmp_path, rgb):
    path = tmp_path / "n02105855_2933.JPEG"
    cv2.imwrite(str(path.with_suffix(".png")), rgb[:, :, ::-1])
    path.with_suffix(".png").rename(path)
    d = decode_gray(path.read_bytes(), 100)
    assert d.format == "png"
    assert (d.width, d.height) == (240, 180)
    assert d.gray.shape == (75, 100)


@pytest.mark.parametrize("max_side", [None, 200, 64])
def test_cmyk_jpeg(rgb, max_side):
    data = _pil_encode("JPEG", Image.fromarray(rgb).convert("CMYK"), quality=95)
    assert data[:3] == b"\xff\xd8\xff"
    d = decode_gray(data, max_side)
    expected = decode_gray(_cv_encode(".png", rgb[:, :, ::-1]), max_side).gray
    assert d.gray.shape == expected.shape
    # inverted (Adobe) CMYK read as plain CMYK would come out as a negative
    assert np.abs(d.gray.astype(int) - expected).mean() < 6


def test_grayscale_jpeg_reduced(rgb):
    gray = _ref_gray(cv2.resize(rgb, (960, 720)))
    data = _jpeg(gray)
    d = decode_gray(data, 120)
    assert d.gray.shape == (90, 120) and (d.width, d.height) == (960, 720)
    expected = cv2.resize(gray, (120, 90), interpolation=cv2.INTER_AREA)
    assert np.abs(d.gray.astype(int) - expected).mean() < 3


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_keeps_high_byte(ext):
    a = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    d = decode_gray(_cv_encode(ext, a))
    np.testing.assert_array_equal(d.gray, (a >> 8).astype(np.uint8))


def test_16bit_color_png():
    a = (np.arange(40 * 30 * 3).reshape(30, 40, 3) * 97 % 65536).astype(np.uint16)
    d = decode_gray(_cv_encode(".png", a))
    expected = cv2.cvtColor((a >> 8).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    assert np.abs(d.gray.astype(int) - expected).max() <= 1


def test_alpha_is_ignored(rgb):
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent
    d = decode_gray(_cv_encode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)))
    assert np.abs(d.gray.astype(int) - _ref_gray(rgb)).max() <= 1


# PIL transpose that displays an image stored with EXIF orientation k
_ORIENT = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
           4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
           6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
           8: [Image.Transpose.ROTATE_90]}


def _oriented_jpeg(stored, orientation):
    """A JPEG of ``stored`` tagged with EXIF ``orientation``, and the image a viewer shows."""
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    data = _pil_encode("JPEG", im, quality=95, exif=exif)
    shown = im
    for t in _ORIENT.get(orientation, []):
        shown = shown.transpose(t)
    return data, np.asarray(shown)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("max_side", [None, 100, 40])
def test_exif_orientation_applied(orientation, max_side):
    stored = _ref_gray(_rgb(320, 200))  # landscape as stored
    data, shown = _oriented_jpeg(stored, orientation)
    d = decode_gray(data, max_side)
    assert (d.height, d.width) == shown.shape
    assert image_size(data) == (d.width, d.height)
    if orientation >= 5:
        assert d.width < d.height
    tw, th = target_size(d.width, d.height, max_side)
    assert d.gray.shape == (th, tw)
    expected = cv2.resize(shown, (tw, th), interpolation=cv2.INTER_AREA)
    assert np.abs(d.gray.astype(int) - expected).mean() < 4


@pytest.mark.parametrize("w, h, max_side, expected", [
    (500, 375, 300, (300, 225)), (375, 500, 300, (225, 300)), (300, 200, 300, (300, 200)),
    (200, 100, 300, (200, 100)), (1000, 3, 100, (100, 1)), (3, 1000, 100, (1, 100)),
    (333, 500, 300, (200, 300)), (640, 480, None, (640, 480)), (5, 5, 1, (1, 1)),
])
def test_target_size(w, h, max_side, expected):
    assert target_size(w, h, max_side) == expected


@pytest.mark.parametrize("w, h, tw, th, r", [
    (500, 375, 300, 225, 1), (2000, 1500, 300, 225, 2), (2400, 1800, 300, 225, 4),
    (4800, 3600, 300, 225, 8), (1200, 900, 300, 225, 2), (1199, 900, 300, 225, 2),
    (1197, 898, 300, 225, 1), (4000, 3000, 100, 75, 8), (100, 75, 100, 75, 1),
    (5000, 10, 200, 1, 8),
])
def test_reduction_factor(w, h, tw, th, r):
    assert _reduction(w, h, tw, th) == r
    # the DCT-scaled image covers twice the target, and a factor 2 more would not
    if r > 1:
        assert -(-w // r) >= 2 * tw and -(-h // r) >= 2 * th
    if r < 8:
        assert -(-w // (2 * r)) < 2 * tw or -(-h // (2 * r)) < 2 * th


@pytest.mark.parametrize("size", [(500, 375), (1600, 1200), (1603, 1199), (2400, 1000),
                                  (375, 2000)])
@pytest.mark.parametrize("max_side", [300, 150, 37])
@pytest.mark.parametrize("progressive", [False, True])
def test_reduced_jpeg_matches_full_decode(size, max_side, progressive):
    rgb = _rgb(*size)
    data = _jpeg(rgb, progressive=progressive)
    d = decode_gray(data, max_side)
    tw, th = target_size(*size, max_side)
    assert (d.width, d.height) == size
    assert d.gray.shape == (th, tw)
    assert d.gray.flags.c_contiguous
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    expected = cv2.resize(full, (tw, th), interpolation=cv2.INTER_AREA)
    # two area filters in a row are not one: on detailed photos they differ by
    # about a gray level on average
    diff = np.abs(d.gray.astype(int) - expected)
    assert diff.mean() < 1.5


def test_never_enlarged(rgb):
    d = decode_gray(_jpeg(rgb), 1000)
    assert d.gray.shape == (180, 240)


def test_accepts_bytes_like(rgb):
    data = _jpeg(rgb)
    a = decode_gray(data, 100).gray
    np.testing.assert_array_equal(decode_gray(bytearray(data), 100).gray, a)
    np.testing.assert_array_equal(decode_gray(memoryview(data), 100).gray, a)
    with pytest.raises(TypeError):
        decode_gray("not bytes")


def test_decode_is_deterministic(rgb):
    data = _jpeg(_rgb(1200, 900))
    a, b = decode_gray(data, 300), decode_gray(data, 300)
    np.testing.assert_array_equal(a.gray, b.gray)


def _waves(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return (128 + 60 * np.sin(2 * np.pi * x / 150) + 60 * np.sin(2 * np.pi * y / 110)
            ).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("w, h, max_side", [(1203, 901, 150), (1202, 899, 290), (901, 1207, 70)])
def test_reduced_decode_keeps_geometry(orientation, w, h, max_side):
    # sides that are not multiples of the DCT scaling factor leave a partial
    # last pixel, on the side EXIF orientation moves it to; smooth waves show
    # any stretch of the image as a large difference
    data, shown = _oriented_jpeg(_waves(w, h), orientation)
    d = decode_gray(data, max_side)
    tw, th = target_size(d.width, d.height, max_side)
    assert _reduction(d.width, d.height, tw, th) > 1
    expected = cv2.resize(shown, (tw, th), interpolation=cv2.INTER_AREA)
    diff = np.abs(d.gray.astype(int) - expected)
    assert diff.mean() < 1.0 and diff.max() <= 4


def test_corrupt_jpeg_markers(rgb):
    data = _jpeg(rgb)
    app0_end = 4 + struct.unpack_from(">H", data, 4)[0]
    with pytest.raises(DecodeError, match="corrupt JPEG"):
        decode_gray(data[:app0_end] + b"\x12\x34" + data[app0_end:])
    no_frame = data[:app0_end] + data[data.find(b"\xff\xda"):]
    with pytest.raises(DecodeError, match="no frame header"):
        decode_gray(no_frame)


# ---- every format's size is read before decoding ----------------------------------------

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True], ids=["tiff", "bigtiff"])
def test_tiff_and_bigtiff_size_from_header(order, big):
    from tiff_files import gray_tiff
    pixels = (np.arange(12 * 7) * 3 % 256).astype(np.uint8).reshape(7, 12)
    data = gray_tiff(pixels, order=order, big=big)
    assert image_size(data) == (12, 7)
    assert np.array_equal(decode_gray(data).gray, pixels)
    bomb = gray_tiff(size=(30000, 30000), order=order, big=big)
    assert image_size(bomb) == (30000, 30000)
    with pytest.raises(DecodeError, match=r"too many pixels \(30000x30000"):
        decode_gray(bomb)


def test_gif_frame_larger_than_its_screen_counts():
    data = bytearray(_pil_encode("GIF", Image.fromarray(np.zeros((8, 8), np.uint8))))
    i = data.index(b"\x2c")  # the first image descriptor
    struct.pack_into("<HHHH", data, i + 1, 0, 0, 20000, 20000)
    assert image_size(bytes(data)) == (20000, 20000)
    with pytest.raises(DecodeError, match="too many pixels"):
        decode_gray(bytes(data))


def test_pam_size_from_header():
    data = b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n"
    assert image_size(data + b"\0" * 64) == (30000, 30000)
    with pytest.raises(DecodeError, match="too many pixels"):
        decode_gray(data + b"\0" * 64)


def test_tiff_tile_far_larger_than_the_image_is_refused():
    from tiff_files import gray_tiff
    data = bytearray(gray_tiff(np.zeros((8, 8), np.uint8)))
    count = struct.unpack_from("<H", data, 8)[0]
    # turn the Compression entry (259) into TileWidth (322) = 60000: an allocation of
    # 60000 x tile length for an 8 x 8 image
    i = 10 + [struct.unpack_from("<H", data, 10 + 12 * k)[0] for k in range(count)].index(259) * 12
    struct.pack_into("<HHII", data, i, 322, 4, 1, 60000)
    with pytest.raises(DecodeError, match="tile larger than the image"):
        decode_gray(bytes(data))


@pytest.mark.parametrize("data", [
    b"RIFF\x20\x00\x00\x00WEBPXYZW" + b"\0" * 32,            # no VP8/VP8L/VP8X chunk
    b"II*\x00\x08\x00\x00\x00\x00\x00" + b"\0" * 8,          # a TIFF directory without a size
    b"P7\nDEPTH 1\nENDHDR\n" + b"\0" * 8,                       # a PAM without WIDTH
    b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 64,           # a JPEG 2000 box without a size
])
def test_unreadable_size_is_refused_not_decoded(data):
    with pytest.raises(DecodeError, match="corrupt|cannot read the image size"):
        decode_gray(data)


def test_a_decoded_array_follows_the_policy_of_files(rgb):
    """An RGB array gives what its lossless PNG gives: the same size and shrink, and the
    same BT.601 luma within the rounding of libpng's fixed-point version of it."""
    from features.decode import decode_array
    from features.exceptions import ParameterError
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    for max_side in (None, 100):
        from_file = decode_gray(png.tobytes(), max_side)
        from_array = decode_array(rgb, max_side)
        assert (from_array.width, from_array.height) == (from_file.width, from_file.height)
        assert from_array.gray.shape == from_file.gray.shape
        diff = np.abs(from_array.gray.astype(int) - from_file.gray)
        assert diff.max() <= 1
    gray = decode_gray(png.tobytes()).gray
    np.testing.assert_array_equal(decode_array(gray).gray, gray)
    np.testing.assert_array_equal(decode_array(gray / 255.0).gray, gray)
    np.testing.assert_array_equal(decode_array(gray.astype(np.uint16) << 8).gray, gray)
    for bad in (gray.astype(np.int32), gray * 1.0, np.zeros((4, 4, 2), np.uint8),
                np.zeros((0, 3), np.uint8)):
        with pytest.raises(ParameterError, match="image"):
            decode_array(bad)


# --------------------------------------------------------------------------
# the shrink: OpenCV's INTER_AREA pixels, computed by the area kernel

def _photo_gray(name):
    image = getattr(skdata, name)()
    return image if image.ndim == 2 else _ref_gray(image)


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee", "chelsea", "rocket"])
@pytest.mark.parametrize("max_side", [300, 256, 150, 37, 1])
def test_shrink_is_opencvs_inter_area(name, max_side):
    """A lossless file decoded at full size and shrunk: bit-identical to cv2.resize."""
    gray = _photo_gray(name)
    d = decode_gray(_cv_encode(".png", gray), max_side)
    tw, th = target_size(gray.shape[1], gray.shape[0], max_side)
    np.testing.assert_array_equal(d.gray, cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA))


def _reduced_by_opencv(data, orientation, max_side):
    """decode_gray's reduced JPEG path done by OpenCV alone: the DCT-scaled decode, then
    cv2.resize by the exact factors, the partial last pixel dropped (see _finish_reduced)."""
    from features.decode import _PARTIAL_FLIPS, _REDUCED_FLAGS
    width, height = image_size(data)
    tw, th = target_size(width, height, max_side)
    r = _reduction(width, height, tw, th)
    assert r > 1
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[r])
    flip_x, flip_y = _PARTIAL_FLIPS[orientation]
    code = {(True, False): 1, (False, True): 0, (True, True): -1}.get(
        (flip_x and width % r != 0, flip_y and height % r != 0))
    if code is not None:
        gray = cv2.flip(gray, code)
    out = cv2.resize(gray, None, fx=tw * r / width, fy=th * r / height,
                     interpolation=cv2.INTER_AREA)[:th, :tw]
    return out if code is None else cv2.flip(out, code)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("w, h, max_side", [(1203, 901, 150), (1202, 899, 290), (901, 1207, 70),
                                            (1600, 1200, 300), (2400, 1800, 300)])
def test_reduced_jpeg_shrink_is_opencvs(orientation, w, h, max_side):
    """The reduced path's resize by factors (cv2.resize(..., fx, fy), whose factors are not
    the ratio of the sizes, cropped to the target): the kernel gives OpenCV's pixels,
    including integer factors (2400 x 1800 at 300: 2 from the quarter-size decode)."""
    stored = cv2.resize(_photo_gray("astronaut"), (w, h), interpolation=cv2.INTER_LINEAR)
    data, _ = _oriented_jpeg(stored, orientation)
    d = decode_gray(data, max_side)
    np.testing.assert_array_equal(d.gray, _reduced_by_opencv(data, orientation, max_side))


def test_shrink_of_an_array_view():
    """decode_array shrinks any 2-D view (a transposed or strided one too) as OpenCV does."""
    from features.decode import decode_array
    gray = _photo_gray("camera")
    for view in (gray.T, gray[::2, 1::3], gray[:, ::-1]):
        expected = cv2.resize(np.ascontiguousarray(view), target_size(view.shape[1], view.shape[0], 100),
                              interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(decode_array(view, 100).gray, expected)
