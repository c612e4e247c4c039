package dev.edgecomp.demo

import android.content.Context
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.security.MessageDigest

/** A bundle ready to run: its manifest, the chosen model file (.tflite or .pte), its bytes and where it came from. */
class ModelBundle(val manifest: Manifest, val file: FileEntry, val model: ByteBuffer, val origin: String) {
    companion object {
        /** The assets folder a bundle is packed into by `./gradlew assembleDebug -Pbundle=DIR`. */
        const val ASSET_DIR = "bundle"
        private const val MANIFEST = "edgecomp.json"

        /** The bundle in [dir] (as `edgecomp deploy` pushes it), with the model file at [path] or the preferred one. */
        fun fromDir(dir: File, path: String? = null): ModelBundle =
            load(dir.path, path) { File(dir, it).readBytes() }

        /** The bundle packed into the APK's assets. */
        fun fromAssets(context: Context): ModelBundle =
            load("assets/$ASSET_DIR", null) { name -> context.assets.open("$ASSET_DIR/$name").use { it.readBytes() } }

        /** The folder `edgecomp deploy` pushes bundles to: files/bundles in the app's external files dir. */
        fun deployedRoot(context: Context): File? = context.getExternalFilesDir(null)?.let { File(it, "bundles") }

        /** The most recently deployed bundle (its folder was written last), else the one in the assets, else null. */
        fun latest(context: Context): ModelBundle? {
            val deployed = deployedRoot(context)
                ?.listFiles { dir -> File(dir, MANIFEST).isFile }
                ?.sortedByDescending { it.lastModified() }
                ?.firstOrNull()
            if (deployed != null) return fromDir(deployed)
            val packed = context.assets.list(ASSET_DIR).orEmpty()
            return if (MANIFEST in packed) fromAssets(context) else null
        }

        private fun load(origin: String, path: String?, read: (String) -> ByteArray): ModelBundle {
            val manifest = parseManifest(String(read(MANIFEST), Charsets.UTF_8))
            val file = manifest.modelFile(path)
            val bytes = read(file.path)
            val digest = MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }
            if (digest != file.sha256) {
                throw ManifestException("${file.path} does not match its sha256 in $MANIFEST (a partial copy?)")
            }
            val model = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder()).put(bytes)
            model.rewind()
            return ModelBundle(manifest, file, model, origin)
        }
    }
}
