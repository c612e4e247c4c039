package dev.edgecomp.demo

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/** The `schema_version` of edgecomp.json this app reads (schemas/edgecomp.schema.json). */
const val SUPPORTED_SCHEMA_VERSION = 1

/** The only model file format the app runs. */
const val TFLITE_FORMAT = "tflite"

/** ExecuTorch's program files (.pte, XNNPACK-delegated), which the app runs with ExecuTorch's Android library. */
const val PTE_FORMAT = "pte"

/** The formats this app can run, each with the runtime that runs it (what BenchmarkReport records). */
val RUNTIMES: Map<String, String> = linkedMapOf(TFLITE_FORMAT to "litert", PTE_FORMAT to "executorch")

/** Axis order of a tensor; [json] is its spelling in edgecomp.json. */
enum class Layout(val json: String) { NCHW("NCHW"), NHWC("NHWC"), NC("NC"), OTHER("other") }

/** Element type of a tensor; [json] is its spelling in edgecomp.json, [bytes] its size. */
enum class DType(val json: String, val bytes: Int) {
    FLOAT32("float32", 4), FLOAT16("float16", 2), INT8("int8", 1), UINT8("uint8", 1),
    INT32("int32", 4), INT64("int64", 8)
}

/** Channel order of an image recipe after decoding; [L] is grayscale (ITU-R 601 luma, as Pillow's "L"). */
enum class Channels(val json: String) { RGB("RGB"), BGR("BGR"), L("L") }

/** Resampling filter of an image recipe's resize; [Preprocessor] resamples as Pillow does. */
enum class Interpolation(val json: String) { BILINEAR("bilinear"), NEAREST("nearest"), BICUBIC("bicubic") }

/**
 * How an image file became the model's input when edgecomp read an image folder: colour order, then
 * [resize] ([S]: shorter side to S, aspect kept, the longer side rounded down; [H, W]: exactly), then
 * [centerCrop] ([H, W] from the centre, offsets rounded down), then [layout]. Raw values are the 8-bit pixels.
 */
data class ImagePreprocess(
    val channels: Channels,
    val resize: List<Int>?,
    val centerCrop: List<Int>?,
    val interpolation: Interpolation,
    val layout: Layout
)

/** Affine quantization of a tensor: `real = scale * (q - zeroPoint)`. */
data class Quantization(val scale: Float, val zeroPoint: Int)

/** Pre-processing: `x = (raw * scale - mean[c]) / std[c]`; a single mean or std applies to all channels. */
data class Normalization(val scale: Float, val mean: List<Float>, val std: List<Float>)

/** One input or output tensor of a model file. */
data class TensorInfo(
    val name: String,
    val shape: List<Int>,
    val dtype: DType,
    val layout: Layout,
    val quantization: Quantization?
)

/** One model file of the bundle. */
data class FileEntry(
    val format: String,
    val path: String,
    val bytes: Long,
    val sha256: String,
    val dtype: String,
    val inputs: List<TensorInfo>,
    val outputs: List<TensorInfo>
)

/** One output of the model, in the order the model files return them; [kind] is "logits" or "values". */
data class OutputSpec(val name: String, val shape: List<Int>, val kind: String)

/** The model's I/O contract. */
data class ModelSpec(
    val name: String,
    val inputShape: List<Int>,
    val layout: Layout,
    val task: String,
    val normalization: Normalization?,
    val imagePreprocess: ImagePreprocess?,
    val labels: List<String>?,
    val outputs: List<OutputSpec>? = null
)

/** edgecomp.json: what the app needs to load and feed a bundle's model. */
data class Manifest(val schemaVersion: Int, val target: String, val model: ModelSpec, val files: List<FileEntry>) {
    /**
     * The runnable file at [path] (a .tflite or a .pte), or, when [path] is null, the first runnable file in the
     * manifest's order (the target's preferred format first; a bundle built with `--formats pte` runs its .pte).
     */
    fun modelFile(path: String? = null): FileEntry {
        if (path != null) {
            val file = files.firstOrNull { it.path == path } ?: throw ManifestException("no file '$path' in the bundle")
            if (file.format !in RUNTIMES) {
                throw ManifestException("'$path' is a ${file.format} file; this app runs ${RUNTIMES.keys.joinToString(" and ")} files")
            }
            return file
        }
        return files.firstOrNull { it.format in RUNTIMES }
            ?: throw ManifestException("the bundle has no file this app can run (${RUNTIMES.keys.joinToString(" or ")})")
    }

    /** The .tflite file at [path], or the first .tflite file (the target's preferred) when [path] is null. */
    fun tflite(path: String? = null): FileEntry =
        files.firstOrNull { it.format == TFLITE_FORMAT && (path == null || it.path == path) }
            ?: throw ManifestException(if (path == null) "the bundle has no .tflite file" else "no .tflite file '$path' in the bundle")
}

/** Number of elements of a tensor of [shape] (1 for a scalar). */
fun elementCount(shape: List<Int>): Int = shape.fold(1) { n, d -> n * d }

/** edgecomp.json is missing, malformed, or does not follow the schema this app reads. */
class ManifestException(message: String, cause: Throwable? = null) : Exception(message, cause)

/** Parses the text of edgecomp.json; throws [ManifestException] saying what is wrong. */
fun parseManifest(text: String): Manifest =
    try {
        parseManifest(JSONObject(text))
    } catch (e: JSONException) {
        throw ManifestException("edgecomp.json does not follow the manifest schema: ${e.message}", e)
    }

// Each parse<Definition> below reads one definition of schemas/edgecomp.schema.json. Keep every
// manifest read in these functions: tests/test_contract.py extracts the reads from this file and checks
// each field's name, type, optionality and default against the schema.

/** Parses a manifest object. */
fun parseManifest(json: JSONObject): Manifest {
    val version = json.getInt("schema_version")
    if (version != SUPPORTED_SCHEMA_VERSION) {
        throw ManifestException("manifest schema_version $version is not supported (this app reads $SUPPORTED_SCHEMA_VERSION)")
    }
    return Manifest(
        schemaVersion = version,
        target = json.getString("target"),
        model = parseModelSpec(json.getJSONObject("model")),
        files = json.getJSONArray("files").objects().map(::parseFileEntry)
    )
}

private fun parseModelSpec(json: JSONObject) = ModelSpec(
    name = json.getString("name"),
    inputShape = json.getJSONArray("input_shape").ints(),
    layout = layoutOf(json.optString("layout", "NCHW")),
    task = json.optString("task", "classification"),
    normalization = json.optJSONObject("normalization")?.let(::parseNormalization),
    imagePreprocess = json.optJSONObject("image_preprocess")?.let(::parseImagePreprocess),
    labels = json.optJSONArray("labels")?.strings(),
    outputs = json.optJSONArray("outputs")?.objects()?.map(::parseOutputSpec)
)

private fun parseOutputSpec(json: JSONObject) = OutputSpec(
    name = json.getString("name"),
    shape = json.getJSONArray("shape").ints(),
    kind = json.optString("kind", "values")
)

private fun parseNormalization(json: JSONObject) = Normalization(
    scale = json.optDouble("scale", 1.0 / 255.0).toFloat(),
    mean = json.optJSONArray("mean")?.floats() ?: listOf(0f),
    std = json.optJSONArray("std")?.floats() ?: listOf(1f)
)

private fun parseImagePreprocess(json: JSONObject) = ImagePreprocess(
    channels = channelsOf(json.optString("channels", "RGB")),
    resize = json.optJSONArray("resize")?.ints(),
    centerCrop = json.optJSONArray("center_crop")?.ints(),
    interpolation = interpolationOf(json.optString("interpolation", "bilinear")),
    layout = layoutOf(json.optString("layout", "NCHW"))
)

private fun parseFileEntry(json: JSONObject) = FileEntry(
    format = json.getString("format"),
    path = json.getString("path"),
    bytes = json.getLong("bytes"),
    sha256 = json.getString("sha256"),
    dtype = json.getString("dtype"),
    inputs = json.getJSONArray("inputs").objects().map(::parseTensorInfo),
    outputs = json.getJSONArray("outputs").objects().map(::parseTensorInfo)
)

private fun parseTensorInfo(json: JSONObject) = TensorInfo(
    name = json.getString("name"),
    shape = json.getJSONArray("shape").ints(),
    dtype = dtypeOf(json.getString("dtype")),
    layout = layoutOf(json.optString("layout", "other")),
    quantization = json.optJSONObject("quantization")?.let(::parseQuantization)
)

private fun parseQuantization(json: JSONObject) = Quantization(
    scale = json.getDouble("scale").toFloat(),
    zeroPoint = json.getInt("zero_point")
)

private fun layoutOf(value: String): Layout =
    Layout.values().firstOrNull { it.json == value } ?: throw ManifestException("unknown layout '$value'")

private fun dtypeOf(value: String): DType =
    DType.values().firstOrNull { it.json == value } ?: throw ManifestException("unknown tensor dtype '$value'")

private fun channelsOf(value: String): Channels =
    Channels.values().firstOrNull { it.json == value } ?: throw ManifestException("unknown channel order '$value'")

private fun interpolationOf(value: String): Interpolation =
    Interpolation.values().firstOrNull { it.json == value } ?: throw ManifestException("unknown interpolation '$value'")

private fun JSONArray.ints(): List<Int> = List(length()) { getInt(it) }

private fun JSONArray.floats(): List<Float> = List(length()) { getDouble(it).toFloat() }

private fun JSONArray.strings(): List<String> = List(length()) { getString(it) }

private fun JSONArray.objects(): List<JSONObject> = List(length()) { getJSONObject(it) }
