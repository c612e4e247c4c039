package dev.edgecomp.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs
import kotlin.math.floor
import kotlin.math.roundToInt

/**
 * Turns image pixels into the bytes of a model's input tensor as the manifest describes it: height,
 * width and channels from the tensor's shape and layout (NCHW or NHWC), `x = (raw * scale - mean[c]) /
 * std[c]`, then float32 as is, or int8/uint8 through the tensor's quantization parameters.
 *
 * With an image recipe ([recipe], the manifest's `image_preprocess`: the model was fed an image folder),
 * an image of any size is converted, resized and centre-cropped exactly as edgecomp's loader did (Pillow's
 * luma and resampling filters, mirrored here; tests/test_preprocess_contract.py and the golden values in
 * src/test/resources/preprocess hold the two to the same numbers), and raw values are the 8-bit pixels.
 * Without one, the image must already be the tensor's size and 8-bit pixels are taken to span the model's
 * raw range [0, 1 / scale]: 0..255 when scale is 1/255, 0..16 for the digits model (scale 1/16). Without a
 * normalization in the manifest, x = pixel / 255.
 */
class Preprocessor(
    private val input: TensorInfo,
    normalization: Normalization?,
    modelLayout: Layout,
    private val recipe: ImagePreprocess? = null
) {
    private val norm = normalization ?: Normalization(1f / 255f, listOf(0f), listOf(1f))

    /** The tensor's own layout when it names an image layout, else the recipe's, else the model's. */
    val layout: Layout = if (input.layout == Layout.NCHW || input.layout == Layout.NHWC) input.layout else recipe?.layout ?: modelLayout

    init {
        require(layout == Layout.NCHW || layout == Layout.NHWC) { "input layout $layout is not an image layout" }
        require(input.shape.size == 4 && input.shape[0] == 1) { "expected an input of shape [1, C, H, W] or [1, H, W, C], got ${input.shape}" }
        require(input.dtype == DType.FLOAT32 || input.quantization != null) { "a ${input.dtype.json} input needs quantization parameters" }
        require(input.dtype in setOf(DType.FLOAT32, DType.INT8, DType.UINT8)) { "cannot feed a ${input.dtype.json} input" }
    }

    val channels: Int = if (layout == Layout.NCHW) input.shape[1] else input.shape[3]
    val height: Int = if (layout == Layout.NCHW) input.shape[2] else input.shape[1]
    val width: Int = if (layout == Layout.NCHW) input.shape[3] else input.shape[2]

    init {
        require(channels == 1 || channels == 3) { "images have 1 or 3 channels, the input has $channels" }
        for (values in listOf(norm.mean, norm.std)) {
            require(values.size == 1 || values.size == channels) { "normalization has ${values.size} values for $channels channels" }
        }
        require(norm.std.none { it == 0f }) { "normalization std contains 0" }
        if (recipe != null) {
            require((recipe.channels == Channels.L) == (channels == 1)) { "the recipe's ${recipe.channels} images do not have the input's $channels channel(s)" }
            require(recipe.resize == null || recipe.resize.size in 1..2) { "resize must be [S] or [H, W], got ${recipe.resize}" }
            require(recipe.centerCrop == null || recipe.centerCrop.size == 2) { "center_crop must be [H, W], got ${recipe.centerCrop}" }
        }
    }

    /** The input tensor's bytes for an ARGB image of [srcWidth] × [srcHeight] (row-major, as `Bitmap.getPixels` gives). */
    fun toBuffer(argb: IntArray, srcWidth: Int, srcHeight: Int): ByteBuffer = encode(prepare(argb, srcWidth, srcHeight))

    /**
     * Normalised values in the tensor's layout for an ARGB image of [srcWidth] × [srcHeight]: through the
     * recipe (colour order, resize, centre crop) when there is one; otherwise the image must be the tensor's size.
     */
    fun prepare(argb: IntArray, srcWidth: Int, srcHeight: Int): FloatArray {
        require(argb.size == srcWidth * srcHeight) { "expected ${srcWidth * srcHeight} pixels, got ${argb.size}" }
        if (recipe == null) {
            require(srcWidth == width && srcHeight == height) { "expected a ${width}x$height image, got ${srcWidth}x$srcHeight (no resize recipe in the manifest)" }
            return normalize(rawFromArgb(argb))
        }
        var planes = Resampler.planes(argb, recipe.channels)
        var w = srcWidth
        var h = srcHeight
        recipe.resize?.let { size ->
            val (rw, rh) = Resampler.resizedSize(w, h, size)
            planes = planes.map { Resampler.resize(it, w, h, rw, rh, recipe.interpolation) }
            w = rw; h = rh
        }
        recipe.centerCrop?.let { (ch, cw) ->
            require(cw <= w && ch <= h) { "cannot crop ${cw}x$ch from a ${w}x$h image" }
            val left = (w - cw) / 2
            val top = (h - ch) / 2
            planes = planes.map { p -> FloatArray(cw * ch) { i -> p[(top + i / cw) * w + left + i % cw] } }
            w = cw; h = ch
        }
        require(w == width && h == height) { "the recipe makes a ${w}x$h image, the input takes ${width}x$height" }
        val raw = FloatArray(w * h * channels)
        for (i in 0 until w * h) for (c in 0 until channels) raw[i * channels + c] = planes[c][i]
        return normalize(raw)
    }

    /** The input tensor's bytes for ARGB pixels ([width] × [height], row-major, as `Bitmap.getPixels` gives). */
    fun toBuffer(argb: IntArray): ByteBuffer = encode(normalize(rawFromArgb(argb)))

    /** Raw channel values (HWC order) of ARGB pixels of the tensor's size: luma for one channel, R, G, B for three. */
    fun rawFromArgb(argb: IntArray): FloatArray {
        require(argb.size == width * height) { "expected ${width * height} pixels, got ${argb.size}" }
        val toRaw = 1f / (255f * norm.scale)
        val raw = FloatArray(argb.size * channels)
        for ((i, p) in argb.withIndex()) {
            val r = (p shr 16) and 0xFF
            val g = (p shr 8) and 0xFF
            val b = p and 0xFF
            if (channels == 1) {
                raw[i] = (0.299f * r + 0.587f * g + 0.114f * b) * toRaw
            } else {
                raw[3 * i] = r * toRaw
                raw[3 * i + 1] = g * toRaw
                raw[3 * i + 2] = b * toRaw
            }
        }
        return raw
    }

    /** Normalised values in the tensor's layout, from raw values in HWC order. */
    fun normalize(rawHwc: FloatArray): FloatArray {
        require(rawHwc.size == height * width * channels) { "expected ${height * width * channels} values, got ${rawHwc.size}" }
        val out = FloatArray(rawHwc.size)
        for (y in 0 until height) for (x in 0 until width) for (c in 0 until channels) {
            val hwc = (y * width + x) * channels + c
            val index = if (layout == Layout.NCHW) (c * height + y) * width + x else hwc
            out[index] = (rawHwc[hwc] * norm.scale - perChannel(norm.mean, c)) / perChannel(norm.std, c)
        }
        return out
    }

    /** A direct, native-order buffer holding [values] as the tensor's dtype (quantized when int8/uint8). */
    fun encode(values: FloatArray): ByteBuffer {
        val buffer = ByteBuffer.allocateDirect(values.size * input.dtype.bytes).order(ByteOrder.nativeOrder())
        if (input.dtype == DType.FLOAT32) {
            values.forEach { buffer.putFloat(it) }
        } else {
            val q = input.quantization!!
            val range = if (input.dtype == DType.INT8) -128..127 else 0..255
            values.forEach { buffer.put(((it / q.scale).roundToInt() + q.zeroPoint).coerceIn(range).toByte()) }
        }
        buffer.rewind()
        return buffer
    }

    private fun perChannel(values: List<Float>, c: Int) = if (values.size == 1) values[0] else values[c]
}

/**
 * Pillow's image operations on float planes: its luma ("L"), and its resize (separable convolution,
 * horizontal pass first, each pass rounded to 8 bits; filters widened by the scale factor when shrinking,
 * which is what antialiases), so the app resizes as edgecomp's loader did.
 */
object Resampler {
    /** One plane per channel of the recipe (R, G, B; B, G, R; or Pillow's luma), values 0..255. */
    fun planes(argb: IntArray, order: Channels): List<FloatArray> {
        val r = FloatArray(argb.size) { ((argb[it] shr 16) and 0xFF).toFloat() }
        val g = FloatArray(argb.size) { ((argb[it] shr 8) and 0xFF).toFloat() }
        val b = FloatArray(argb.size) { (argb[it] and 0xFF).toFloat() }
        return when (order) {
            Channels.RGB -> listOf(r, g, b)
            Channels.BGR -> listOf(b, g, r)
            // Pillow's L24: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
            Channels.L -> listOf(FloatArray(argb.size) { ((r[it].toInt() * 19595 + g[it].toInt() * 38470 + b[it].toInt() * 7471 + 0x8000) shr 16).toFloat() })
        }
    }

    /** (width, height) after resize [S] (shorter side to S, the other rounded down) or [H, W]. */
    fun resizedSize(width: Int, height: Int, resize: List<Int>): Pair<Int, Int> = when {
        resize.size == 2 -> Pair(resize[1], resize[0])
        width <= height -> Pair(resize[0], resize[0] * height / width)
        else -> Pair(resize[0] * width / height, resize[0])
    }

    /** [plane] ([w] × [h]) resized to [outW] × [outH] with [filter]. */
    fun resize(plane: FloatArray, w: Int, h: Int, outW: Int, outH: Int, filter: Interpolation): FloatArray {
        if (outW == w && outH == h) return plane
        if (filter == Interpolation.NEAREST) {
            return FloatArray(outW * outH) { i ->
                val x = minOf(((i % outW + 0.5) * w / outW).toInt(), w - 1)
                val y = minOf(((i / outW + 0.5) * h / outH).toInt(), h - 1)
                plane[y * w + x]
            }
        }
        var out = plane
        var curW = w
        if (outW != w) {
            out = pass(out, curW, h, outW, filter, horizontal = true)
            curW = outW
        }
        if (outH != h) out = pass(out, curW, h, outH, filter, horizontal = false)
        return out
    }

    private fun kernel(x: Double, filter: Interpolation): Double {
        val t = abs(x)
        return when (filter) {
            Interpolation.BICUBIC -> {
                val a = -0.5
                if (t < 1) ((a + 2) * t - (a + 3)) * t * t + 1 else if (t < 2) (((t - 5) * t + 8) * t - 4) * a else 0.0
            }
            else -> if (t < 1) 1 - t else 0.0
        }
    }

    /** One convolution pass along x ([horizontal]) or y, from [inSize] to [outSize] samples, rounded to 8 bits. */
    private fun pass(src: FloatArray, w: Int, h: Int, outSize: Int, filter: Interpolation, horizontal: Boolean): FloatArray {
        val inSize = if (horizontal) w else h
        val scale = inSize.toDouble() / outSize
        val filterScale = maxOf(scale, 1.0)
        val support = (if (filter == Interpolation.BICUBIC) 2.0 else 1.0) * filterScale
        val outW = if (horizontal) outSize else w
        val outH = if (horizontal) h else outSize
        val out = FloatArray(outW * outH)
        for (o in 0 until outSize) {
            val center = (o + 0.5) * scale
            val lo = maxOf((center - support + 0.5).toInt(), 0)
            val hi = minOf((center + support + 0.5).toInt(), inSize)
            val weights = DoubleArray(hi - lo) { kernel((it + lo - center + 0.5) / filterScale, filter) }
            val total = weights.sum()
            if (total != 0.0) for (k in weights.indices) weights[k] /= total
            val lines = if (horizontal) h else w
            for (line in 0 until lines) {
                var sum = 0.0
                for (k in weights.indices) {
                    val at = if (horizontal) line * w + lo + k else (lo + k) * w + line
                    sum += weights[k] * src[at]
                }
                val value = floor(sum + 0.5).coerceIn(0.0, 255.0).toFloat()
                out[if (horizontal) line * outW + o else o * outW + line] = value
            }
        }
        return out
    }
}
