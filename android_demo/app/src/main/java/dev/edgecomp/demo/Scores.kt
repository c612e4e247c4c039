package dev.edgecomp.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs
import kotlin.math.exp

/** One class and its score. */
data class Prediction(val label: String, val score: Float)

/** The output tensor's values as floats: float32 as is, int8/uint8 dequantized with the tensor's parameters. */
fun decodeOutput(buffer: ByteBuffer, tensor: TensorInfo): FloatArray {
    val data = buffer.duplicate().order(ByteOrder.nativeOrder())
    data.rewind()
    val count = tensor.shape.fold(1) { acc, d -> acc * d }
    return when (tensor.dtype) {
        DType.FLOAT32 -> FloatArray(count) { data.getFloat() }
        DType.INT8, DType.UINT8 -> {
            val q = tensor.quantization ?: throw ManifestException("output ${tensor.name} is ${tensor.dtype.json} without quantization")
            FloatArray(count) {
                val raw = data.get().toInt()
                val value = if (tensor.dtype == DType.UINT8) raw and 0xFF else raw
                q.scale * (value - q.zeroPoint)
            }
        }
        else -> throw ManifestException("cannot read a ${tensor.dtype.json} output")
    }
}

/** Probabilities from logits; values that already form a distribution are returned unchanged. */
fun softmax(values: FloatArray): FloatArray {
    if (values.isEmpty() || values.all { it in 0f..1f } && abs(values.sum() - 1f) < 1e-3f) return values
    val max = values.reduce { a, b -> maxOf(a, b) }
    val exps = values.map { exp((it - max).toDouble()) }
    val total = exps.sum()
    return FloatArray(values.size) { (exps[it] / total).toFloat() }
}

/** The [k] best classes, named by [labels] where known. */
fun topK(scores: FloatArray, labels: List<String>?, k: Int): List<Prediction> =
    scores.indices.sortedByDescending { scores[it] }.take(k).map { Prediction(labels?.getOrNull(it) ?: "class $it", scores[it]) }

/** The [q]-th percentile (0..100) of [values], linearly interpolated as numpy does by default. */
fun percentile(values: List<Double>, q: Double): Double {
    require(values.isNotEmpty()) { "no values" }
    val sorted = values.sorted()
    val pos = (sorted.size - 1) * q / 100.0
    val lo = pos.toInt()
    val hi = minOf(lo + 1, sorted.size - 1)
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

/** The latencies of the last [capacity] runs, for a running median. */
class LatencyWindow(private val capacity: Int = 50) {
    private val values = java.util.ArrayDeque<Double>()

    /** Number of runs held. */
    val size: Int get() = values.size

    /** Records one run's latency in ms, dropping the oldest beyond [capacity]. */
    fun add(ms: Double) {
        values.addLast(ms)
        if (values.size > capacity) values.removeFirst()
    }

    /** Median of the runs held, or null before the first. */
    fun p50(): Double? = if (values.isEmpty()) null else percentile(values.toList(), 50.0)
}
