package dev.edgecomp.demo

import java.nio.ByteOrder
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.json.JSONObject
import org.junit.Test

class PreprocessorTest {
    private fun tensor(shape: List<Int>, layout: Layout, dtype: DType = DType.FLOAT32, q: Quantization? = null) =
        TensorInfo("input", shape, dtype, layout, q)

    private fun argb(r: Int, g: Int, b: Int) = (0xFF shl 24) or (r shl 16) or (g shl 8) or b

    @Test
    fun normalisesPerChannelAndWritesNchw() {
        val norm = Normalization(1f, listOf(1f, 2f, 3f), listOf(1f, 2f, 4f))
        val p = Preprocessor(tensor(listOf(1, 3, 1, 2), Layout.NCHW), norm, Layout.NCHW)
        assertEquals(3, p.channels); assertEquals(1, p.height); assertEquals(2, p.width)
        // raw HWC: pixel 0 = (1, 2, 3), pixel 1 = (5, 6, 7)
        val out = p.normalize(floatArrayOf(1f, 2f, 3f, 5f, 6f, 7f))
        // NCHW: channel 0 of both pixels, then channel 1, then channel 2
        assertArrayEquals(floatArrayOf(0f, 4f, 0f, 2f, 0f, 1f), out, 1e-6f)
    }

    @Test
    fun keepsHwcOrderForNhwc() {
        val norm = Normalization(0.5f, listOf(1f), listOf(2f))
        val p = Preprocessor(tensor(listOf(1, 1, 2, 3), Layout.NHWC), norm, Layout.NCHW)
        assertEquals(Layout.NHWC, p.layout)
        val out = p.normalize(floatArrayOf(2f, 4f, 6f, 8f, 10f, 12f))
        assertArrayEquals(floatArrayOf(0f, 0.5f, 1f, 1.5f, 2f, 2.5f), out, 1e-6f)
    }

    @Test
    fun fallsBackToTheModelLayoutWhenTheTensorSaysOther() {
        val p = Preprocessor(tensor(listOf(1, 1, 4, 2), Layout.OTHER), null, Layout.NCHW)
        assertEquals(Layout.NCHW, p.layout)
        assertEquals(4, p.height); assertEquals(2, p.width)
    }

    @Test
    fun mapsEightBitPixelsOntoTheRawRange() {
        // digits: scale 1/16, so 255 is raw 16 and normalises to (1 - 0.3) / 0.4
        val p = Preprocessor(tensor(listOf(1, 1, 1, 2), Layout.NCHW), Normalization(0.0625f, listOf(0.3f), listOf(0.4f)), Layout.NCHW)
        val raw = p.rawFromArgb(intArrayOf(argb(255, 255, 255), argb(0, 0, 0)))
        assertArrayEquals(floatArrayOf(16f, 0f), raw, 1e-4f)
        assertArrayEquals(floatArrayOf(1.75f, -0.75f), p.normalize(raw), 1e-5f)
        val rgb = Preprocessor(tensor(listOf(1, 3, 1, 1), Layout.NCHW), null, Layout.NCHW)
        assertArrayEquals(floatArrayOf(1f, 0.2f, 0f), rgb.normalize(rgb.rawFromArgb(intArrayOf(argb(255, 51, 0)))), 1e-6f)
    }

    @Test
    fun quantizesInt8AndUint8WithClamping() {
        val q = Quantization(0.5f, -2)
        val p = Preprocessor(tensor(listOf(1, 1, 1, 4), Layout.NCHW, DType.INT8, q), null, Layout.NCHW)
        val bytes = p.encode(floatArrayOf(0f, 1f, -1000f, 1000f))
        assertEquals(ByteOrder.nativeOrder(), bytes.order())
        assertArrayEquals(byteArrayOf(-2, 0, -128, 127), ByteArray(4) { bytes.get(it) })
        val u = Preprocessor(tensor(listOf(1, 1, 1, 3), Layout.NCHW, DType.UINT8, Quantization(1f / 255f, 0)), null, Layout.NCHW)
        val ub = u.encode(floatArrayOf(0f, 1f, 0.6f))
        assertEquals(listOf(0, 255, 153), List(3) { ub.get(it).toInt() and 0xFF })
    }

    @Test
    fun writesFloat32InNativeOrder() {
        val p = Preprocessor(tensor(listOf(1, 1, 1, 2), Layout.NCHW), null, Layout.NCHW)
        val buffer = p.toBuffer(intArrayOf(argb(255, 255, 255), argb(0, 0, 0)))
        assertEquals(8, buffer.capacity())
        assertEquals(1f, buffer.getFloat(0), 1e-6f)
        assertEquals(0f, buffer.getFloat(4), 1e-6f)
    }

    @Test
    fun rejectsInputsItCannotFeed() {
        val bad = listOf(
            { Preprocessor(tensor(listOf(1, 64), Layout.NC), null, Layout.NC) },
            { Preprocessor(tensor(listOf(1, 1, 2, 2), Layout.NCHW, DType.INT8), null, Layout.NCHW) },
            { Preprocessor(tensor(listOf(1, 2, 2, 2), Layout.NCHW), null, Layout.NCHW) },
            { Preprocessor(tensor(listOf(1, 3, 2, 2), Layout.NCHW), Normalization(1f, listOf(0f, 0f), listOf(1f)), Layout.NCHW) }
        )
        for ((i, make) in bad.withIndex()) {
            try {
                make()
                throw AssertionError("case $i was accepted")
            } catch (e: IllegalArgumentException) {
                // expected
            }
        }
    }

    /** The manifests, pixels and inputs that edgecomp's Python loader made (tests/test_preprocess_contract.py). */
    @Test
    fun goldenValuesFromPythonAreReproduced() {
        val text = PreprocessorTest::class.java.getResource("/preprocess/golden.json")?.readText()
            ?: throw AssertionError("no resource preprocess/golden.json")
        val cases = JSONObject(text).getJSONArray("cases")
        assertEquals(5, cases.length())
        for (i in 0 until cases.length()) {
            val case = cases.getJSONObject(i)
            val manifest = parseManifest(case.getJSONObject("manifest").toString())
            val recipe = manifest.model.imagePreprocess ?: throw AssertionError("case $i has no image_preprocess")
            val p = Preprocessor(manifest.tflite().inputs[0], manifest.model.normalization, manifest.model.layout, recipe)
            val argb = case.getJSONArray("argb").let { a -> IntArray(a.length()) { a.getInt(it) } }
            val expected = case.getJSONArray("expected").let { a -> FloatArray(a.length()) { a.getDouble(it).toFloat() } }
            val got = p.prepare(argb, case.getInt("width"), case.getInt("height"))
            assertArrayEquals(case.getString("name"), expected, got, case.getDouble("tolerance").toFloat())
        }
    }

    @Test
    fun aRecipeResizesAndCropsImagesOfAnySize() {
        val recipe = ImagePreprocess(Channels.RGB, listOf(4), listOf(2, 2), Interpolation.NEAREST, Layout.NCHW)
        val p = Preprocessor(tensor(listOf(1, 3, 2, 2), Layout.NCHW), null, Layout.NCHW, recipe)
        // an 8x4 image, left half red, right half blue: shorter side 4 -> 8x4 (no change), crop the middle 2x2
        val img = IntArray(32) { if (it % 8 < 4) argb(255, 0, 0) else argb(0, 0, 255) }
        val x = p.prepare(img, 8, 4)
        assertArrayEquals(floatArrayOf(1f, 0f, 1f, 0f, 0f, 0f, 0f, 0f, 0f, 1f, 0f, 1f), x, 1e-6f)
        try {
            Preprocessor(tensor(listOf(1, 1, 2, 2), Layout.NCHW), null, Layout.NCHW, recipe)
            throw AssertionError("an RGB recipe was accepted for a 1-channel input")
        } catch (e: IllegalArgumentException) {
            // expected
        }
    }
}
