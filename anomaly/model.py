"""The network: a small convolutional autoencoder over log-mel windows (Keras 3).

The encoder is a named sub-model saved on its own (``encoder.keras``); it maps a normalised window
``(n_mels, window_frames, 1)`` to two outputs: the ``embedding`` (average and max pooling of the last
feature map, so that a 50 ms click stays visible) and the ``code`` (the bottleneck map) that the
``decoder`` turns back into a window. The decoder's reconstruction error per time-frequency cell is the
anomaly map the app overlays on the spectrogram.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import numpy as np

log = logging.getLogger("anomaly")


def _tensorflow():
    """TensorFlow, imported once, with file descriptor 2 silenced while it loads.

    Its C++ runtime prints start-up notices (oneDNN, CPU features, the absent GPU) straight to fd 2, where
    they would bury the CLI's one-line errors; they are kept back, and shown only if the import fails. Only
    the import is silenced: everything TensorFlow reports later still reaches stderr.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()  # Python's own warnings of the import stay silenced too
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def _keras():
    _tensorflow()  # Keras's TensorFlow backend imports it: do it quietly first
    import keras

    return keras


def __getattr__(name: str):
    # ``from anomaly.model import keras`` (or ``tf``): the quiet import above, for modules that need the
    # library itself; nothing heavy is imported until one of them asks.
    if name == "keras":
        return _keras()
    if name == "tf":
        return _tensorflow()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_autoencoder(n_mels: int, window_frames: int, *, code_channels: int = 32, seed: int = 0):
    """Encoder, decoder and the autoencoder joining them.

    Four stride-2 convolutions take a 128 x 64 window to an 8 x 4 map; pooling (not Flatten -> Dense)
    keeps the encoder small and independent of the window length.
    """
    keras = _keras()
    layers = keras.layers
    init = keras.initializers.GlorotUniform(seed=seed)
    if n_mels % 16 or window_frames % 16:
        raise ValueError("n_mels and window_frames must be multiples of 16")

    inputs = keras.Input(shape=(n_mels, window_frames, 1), name="log_mel_window")
    x = inputs
    for i, channels in enumerate((16, 32, 64)):
        x = layers.Conv2D(
            channels, 3, strides=2, padding="same", kernel_initializer=init, name=f"enc_conv{i}"
        )(x)
        x = layers.BatchNormalization(name=f"enc_bn{i}")(x)
        x = layers.Activation("relu", name=f"enc_relu{i}")(x)
    x = layers.Conv2D(
        code_channels * 2, 3, strides=2, padding="same", kernel_initializer=init, name="enc_conv3"
    )(x)
    features = layers.Activation("relu", name="enc_relu3")(x)
    code = layers.Conv2D(code_channels, 1, kernel_initializer=init, name="code")(features)
    embedding = layers.Concatenate(name="embedding")(
        [
            layers.GlobalAveragePooling2D(name="avg_pool")(features),
            layers.GlobalMaxPooling2D(name="max_pool")(features),
        ]
    )
    encoder = keras.Model(inputs, {"embedding": embedding, "code": code}, name="encoder")

    code_in = keras.Input(shape=tuple(code.shape[1:]), name="code_in")
    y = code_in
    for i, channels in enumerate((64, 32, 16, 16)):
        y = layers.Conv2DTranspose(
            channels, 3, strides=2, padding="same", kernel_initializer=init, name=f"dec_deconv{i}"
        )(y)
        y = layers.BatchNormalization(name=f"dec_bn{i}")(y)
        y = layers.Activation("relu", name=f"dec_relu{i}")(y)
    recon = layers.Conv2D(1, 3, padding="same", kernel_initializer=init, name="reconstruction")(y)
    decoder = keras.Model(code_in, recon, name="decoder")

    auto_in = keras.Input(shape=(n_mels, window_frames, 1), name="log_mel_window")
    autoencoder = keras.Model(auto_in, decoder(encoder(auto_in)["code"]), name="autoencoder")
    return encoder, decoder, autoencoder


def train_autoencoder(
    autoencoder,
    inputs: np.ndarray,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 64,
    validation: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Fit the autoencoder on normalised windows ``(n, n_mels, frames, 1)``; log epochs and losses."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            extra = f", val_loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            log.info("epoch %d/%d: loss %.4f%s", epoch + 1, epochs, logs.get("loss", float("nan")), extra)

    history = autoencoder.fit(
        inputs,
        inputs,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        validation_data=(validation, validation) if validation is not None and len(validation) else None,
        callbacks=[_Progress()],
    )
    n = len(history.history.get("loss", []))
    return [{k: float(v[i]) for k, v in history.history.items()} for i in range(n)]


class CompiledEncoder:
    """Encoder (and optional decoder) behind a compiled ``tf.function``: no ``model.predict`` overhead."""

    # 32 to 64 windows per call keep the activations in cache: 1.3 to 2x the throughput of 256 on 2 cores.
    def __init__(self, encoder, decoder=None, *, batch_size: int = 64):
        tf = _tensorflow()

        self.encoder = encoder
        self.decoder = decoder
        self.batch_size = batch_size
        shape = tuple(encoder.inputs[0].shape[1:])
        spec = tf.TensorSpec(shape=(None, *shape), dtype=tf.float32)

        # Traced once here; calling the concrete functions skips tf.function's per-call argument matching
        # (about 0.3 ms of a 10 s clip's 5 ms in the network).
        @tf.function(input_signature=[spec])
        def _embed(x):
            return encoder(x, training=False)["embedding"]

        self._embed = _embed.get_concrete_function()
        if decoder is not None:

            @tf.function(input_signature=[spec])
            def _both(x):
                out = encoder(x, training=False)
                return out["embedding"], decoder(out["code"], training=False)

            self._both = _both.get_concrete_function()
        self._tf = tf

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embeddings of normalised windows ``(n, n_mels, frames)`` -> ``(n, dim)``."""
        x = np.asarray(x, dtype=np.float32)[..., None]
        parts = [
            self._embed(self._tf.constant(x[i : i + self.batch_size])).numpy()
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.embedding_dim), np.float32)

    def embed_and_reconstruct(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and reconstructions ``(n, n_mels, frames)`` of normalised windows."""
        if self.decoder is None:
            raise RuntimeError("this bundle has no decoder")
        x = np.asarray(x, dtype=np.float32)[..., None]
        embs, recons = [], []
        for i in range(0, len(x), self.batch_size):
            e, r = self._both(self._tf.constant(x[i : i + self.batch_size]))
            embs.append(e.numpy())
            recons.append(r.numpy()[..., 0])
        return np.concatenate(embs), np.concatenate(recons)

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.get_layer("embedding").output.shape[-1])


# Threads TensorFlow's kernels use when a process only scores (the app, the CLI, an archive worker). One
# of each: on 2 cores its default (a pool per core, spinning after each op) competed with the decoding and
# log-mel work of the same analysis. Measured (bench, one 10 s clip): core path 6.45 -> 5.87 ms, 2.54x ->
# 2.19x the log-mel floor; batch 193-240 -> 202-227 clips/s (noise of a shared machine).
SCORING_THREADS = 1


def use_scoring_threads() -> None:
    """Give TensorFlow ``SCORING_THREADS`` threads, if it has not run anything yet in this process (a
    process that trained first keeps its defaults: TensorFlow fixes them at its first operation)."""
    tf = _tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(SCORING_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(SCORING_THREADS)
    except RuntimeError:
        log.debug("TensorFlow already running: its thread settings stay as they are")


def load_models(encoder_path, decoder_path=None):
    """Load the saved encoder (and decoder) for scoring, without compiling training state."""
    use_scoring_threads()
    keras = _keras()
    encoder = keras.models.load_model(encoder_path, compile=False)
    decoder = keras.models.load_model(decoder_path, compile=False) if decoder_path else None
    return encoder, decoder
