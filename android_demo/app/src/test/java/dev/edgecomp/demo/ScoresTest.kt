package dev.edgecomp.demo

import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

class ScoresTest {
    @Test
    fun dequantizesInt8AndUint8Outputs() {
        val int8 = TensorInfo("y", listOf(1, 3), DType.INT8, Layout.NC, Quantization(0.125f, 3))
        val buffer = ByteBuffer.allocateDirect(3).order(ByteOrder.nativeOrder()).put(byteArrayOf(3, 11, -128))
        assertArrayEquals(floatArrayOf(0f, 1f, -16.375f), decodeOutput(buffer, int8), 1e-6f)
        val uint8 = int8.copy(dtype = DType.UINT8, quantization = Quantization(1f, 0))
        val ub = ByteBuffer.allocateDirect(1).put(255.toByte())
        assertArrayEquals(floatArrayOf(255f), decodeOutput(ub, uint8.copy(shape = listOf(1, 1))), 0f)
    }

    @Test
    fun softmaxRanksAndTopKNamesClasses() {
        val probs = softmax(floatArrayOf(1f, 3f, 2f))
        assertEquals(1f, probs.sum(), 1e-6f)
        val top = topK(probs, listOf("a", "b", "c"), 2)
        assertEquals(listOf("b", "c"), top.map { it.label })
        assertEquals("class 1", topK(probs, null, 1)[0].label)
        val already = floatArrayOf(0.25f, 0.75f)
        assertArrayEquals(already, softmax(already), 0f)
    }

    @Test
    fun percentileMatchesNumpyAndTheWindowKeepsRecentRuns() {
        assertEquals(2.5, percentile(listOf(4.0, 1.0, 2.0, 3.0), 50.0), 1e-12)
        assertEquals(3.7, percentile(listOf(1.0, 2.0, 3.0, 4.0), 90.0), 1e-12)
        val window = LatencyWindow(capacity = 3)
        assertNull(window.p50())
        listOf(100.0, 1.0, 2.0, 3.0).forEach(window::add)
        assertEquals(3, window.size)
        assertEquals(2.0, window.p50()!!, 0.0)
    }

    @Test
    fun benchmarkReportHoldsEveryRunAndItsSummary() {
        val report = JSONObject(benchmarkReport("m", "model.tflite", 4, 2, 12.5, listOf(1.0, 2.0, 3.0), mapOf("model" to "Pixel")).toString())
        assertEquals("ok", report.getString("status"))
        assertEquals(3, report.getInt("runs"))
        assertEquals(3, report.getJSONArray("times_ms").length())
        assertEquals(2.0, report.getDouble("p50_ms"), 1e-12)
        assertEquals("Pixel", report.getJSONObject("device").getString("model"))
        assertEquals("boom", JSONObject(benchmarkError("boom").toString()).getString("error"))
    }
}
