package dev.edgecomp.demo

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** The sample manifests in src/test/resources/manifests (the Python contract test validates them too). */
fun sampleManifest(name: String): String =
    ManifestTest::class.java.getResource("/manifests/$name")?.readText() ?: throw AssertionError("no resource $name")

class ManifestTest {
    @Test
    fun parsesTheDigitsBundleEdgecompBuilds() {
        val m = parseManifest(sampleManifest("valid/digits_cnn_fp32.json"))
        assertEquals(1, m.schemaVersion)
        assertEquals("android-arm64", m.target)
        assertEquals("digits_cnn", m.model.name)
        assertEquals(listOf(1, 1, 8, 8), m.model.inputShape)
        assertEquals(Layout.NCHW, m.model.layout)
        assertEquals(Normalization(0.0625f, listOf(0.3f), listOf(0.4f)), m.model.normalization)
        assertEquals((0..9).map { it.toString() }, m.model.labels)
        val file = m.tflite()
        assertEquals("model.tflite", file.path)
        assertEquals("fp32", file.dtype)
        assertEquals(TensorInfo("serving_default_args_0", listOf(1, 1, 8, 8), DType.FLOAT32, Layout.NCHW, null), file.inputs[0])
        assertEquals(listOf(1, 10), file.outputs[0].shape)
        assertEquals(64, file.sha256.length)
    }

    @Test
    fun readsQuantizedNhwcTensorsAndPicksTheTfliteFile() {
        val m = parseManifest(sampleManifest("valid/rgb_int8_nhwc.json"))
        val file = m.tflite()
        assertEquals("model_int8.tflite", file.path)
        assertEquals(file, m.tflite("model_int8.tflite"))
        val input = file.inputs[0]
        assertEquals(DType.INT8, input.dtype)
        assertEquals(Layout.NHWC, input.layout)
        assertEquals(Quantization(0.0186584f, -14), input.quantization)
        assertEquals(listOf(0.485f, 0.456f, 0.406f), m.model.normalization!!.mean)
        assertEquals(listOf("cat", "dog", "bird"), m.model.labels)
    }

    @Test
    fun appliesTheSchemaDefaultsToOmittedFields() {
        val m = parseManifest(sampleManifest("valid/minimal_defaults.json"))
        assertEquals(Layout.NCHW, m.model.layout)
        assertEquals("classification", m.model.task)
        assertEquals(Normalization(1f / 255f, listOf(0f), listOf(1f)), m.model.normalization)
        assertNull(m.model.labels)
        val input = m.tflite().inputs[0]
        assertEquals(Layout.OTHER, input.layout)
        assertNull(input.quantization)
    }

    @Test
    fun rejectsManifestsThatBreakTheSchema() {
        val reasons = mapOf(
            "future_schema_version" to "schema_version 2 is not supported",
            "missing_files" to "files",
            "unknown_layout" to "unknown layout 'CHW'",
            "shape_not_integers" to "cannot be converted to int"
        )
        for ((name, reason) in reasons) {
            try {
                parseManifest(sampleManifest("invalid/$name.json"))
                fail("$name was accepted")
            } catch (e: ManifestException) {
                assertTrue("$name: ${e.message}", e.message!!.contains(reason))
            }
        }
    }

    @Test
    fun saysWhenTheBundleHasNoSuchTfliteFile() {
        val m = parseManifest(sampleManifest("valid/digits_cnn_fp32.json"))
        try {
            m.tflite("other.tflite")
            fail("accepted a missing file")
        } catch (e: ManifestException) {
            assertTrue(e.message!!.contains("other.tflite"))
        }
    }

    @Test
    fun runsThePteOfABundleBuiltWithFormatsPte() {
        val m = parseManifest(sampleManifest("valid/digits_cnn_int8_pte.json"))
        val file = m.modelFile()
        assertEquals(PTE_FORMAT, file.format)
        assertEquals("model.pte", file.path)
        assertEquals("executorch", RUNTIMES.getValue(file.format))
        assertEquals(DType.FLOAT32, file.inputs[0].dtype)
        assertEquals(listOf(1, 1, 8, 8), file.inputs[0].shape)
        assertEquals(10, elementCount(file.outputs[0].shape))
    }

    @Test
    fun prefersTheTargetsFirstRunnableFileAndTakesAnExplicitOne() {
        val m = parseManifest(sampleManifest("valid/rgb_int8_nhwc.json"))
        assertEquals("model_int8.tflite", m.modelFile().path)  // the .onnx before it is not runnable here
        try {
            m.modelFile("model.onnx")
            fail("accepted an onnx file")
        } catch (e: ManifestException) {
            assertTrue(e.message!!, e.message!!.contains("runs tflite and pte files"))
        }
    }
}
