package dev.edgecomp.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.roundToInt

/**
 * Turns image pixels into the bytes of a model's input tensor as the manifest describes it: height,
 * width and channels from the tensor's shape and layout (NCHW or NHWC), `x = (raw * scale - mean[c]) /
 * std[c]`, then float32 as is, or int8/uint8 through the tensor's quantization parameters.
 *
 * 8-bit pixels are taken to span the model's raw range [0, 1 / scale]: 0..255 when scale is 1/255,
 * 0..16 for the digits model (scale 1/16). Without a normalization in the manifest, x = pixel / 255.
 */
class Preprocessor(private val input: TensorInfo, normalization: Normalization?, modelLayout: Layout) {
    private val norm = normalization ?: Normalization(1f, listOf(0f), listOf(1f))

    /** The tensor's own layout when it names an image layout, else the model's. */
    val layout: Layout = if (input.layout == Layout.NCHW || input.layout == Layout.NHWC) input.layout else modelLayout

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
    }

    /** The input tensor's bytes for ARGB pixels ([width] × [height], row-major, as `Bitmap.getPixels` gives). */
    fun toBuffer(argb: IntArray): ByteBuffer = encode(normalize(rawFromArgb(argb)))

    /** Raw channel values (HWC order) of ARGB pixels: luma for one channel, R, G, B for three. */
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
