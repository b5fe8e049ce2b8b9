"""Transfer of latency predictions to hardware never seen in training: zero-shot from device features,
few-shot from k measurements on the new device.

Three families of adaptation, chosen by leave-one-out cross-validation on the target's labelled points
(:func:`select_calibrator`):

(a) *device fitting*: refit the device-specific parameters of a multi-device model (the device weights
    ``u, c`` of :class:`MultiDeviceModel`, HELP-style adaptation of a device embedding) on the target's
    points, in closed form: a few coordinates in the subspace the source devices span, or every weight by
    ridge regression towards the best-matching source device; for the plan-aware GNN, its input device
    features are fine-tuned instead (:func:`fit_board`);
(b) *monotone calibration* of one source prediction (the best-correlated source device): a scale, a
    log-linear map, or isotonic regression in log space with log-linear extrapolation beyond the
    calibration range (rankings largely carry across devices: performance monotonicity);
(c) *mixture*: the target latency as a non-negative combination of the predicted latencies of the source
    devices best correlated with it (chosen by the fingerprint / the labelled points).

What the counts mean. A device's *fingerprint* is part of its description (board.json ``fingerprint``:
latencies of reference workloads measured on it). ``k = 0`` (zero-shot) uses the device description
only, fingerprint included: when the fingerprint's reference workloads are graphs the model can encode
(HELP's 10 reference architectures), they are the labelled points the adaptation fits. ``k`` shots are
k further measurements of workloads chosen for the task, on top of the fingerprint.

The adapted predictor is a normal checkpoint (:class:`CalibratedPredictor`): it loads its source
predictor, applies the fitted calibration and records on its card the source, the measurements, the
chosen method and the cross-validated error. :func:`choose_shots` picks the most informative workloads
to measure (spread over predicted-latency quantiles, diverse within each stratum).

The multi-device graph model (:class:`MultiDeviceModel`, network built by ``_build_net``) is built on
torch_geometric directly: the project's plan-aware :class:`perfpredict.gnn.PerfGNN` conditions on hardware
facts (roofline priors, device vector), whereas HELP's devices are known only by their latency
fingerprints. Here a GNN maps a graph to K latent factors phi(g) and each device d is a weight vector:
``log latency = phi(g) . u_d + c_d`` (a low-rank factorisation of the graph x device log-latency table
whose graph side is a GNN), so a new device is K + 1 numbers fitted from a few points.

One module holds each part: :mod:`~perfpredict.transfer.calibrators` (the calibrators and their registry),
:mod:`~perfpredict.transfer.selection` (cross-validated choice and averaging), :mod:`~perfpredict.transfer.proxies`
(trained devices a new one borrows from: fingerprints, Amdahl across thread counts),
:mod:`~perfpredict.transfer.multidevice` (the multi-device graph model), :mod:`~perfpredict.transfer.measurements`
(the target's measurements), :mod:`~perfpredict.transfer.predictors` (transfer checkpoints and their loader),
:mod:`~perfpredict.transfer.shots` (which workloads to measure) and :mod:`~perfpredict.transfer.adapt`
(:func:`adapt_predictor`, :func:`fit_board`).
"""

from perfpredict.errors import TransferError
from perfpredict.transfer.adapt import BOARD_FIT_FIELDS, TransferResult, adapt_predictor, fit_board, scaled_board
from perfpredict.transfer.calibrators import (
    CALIBRATORS, Calibrator, IsotonicCalibrator, LogLinearCalibrator, MixtureCalibrator, ScaleCalibrator,
    SplitScaleCalibrator, calibrator_from_dict, register_calibrator,
)
from perfpredict.transfer.measurements import Measurement, beacon_normalised, read_measurements, write_measurements
from perfpredict.transfer.multidevice import (
    ENCODING_VERSION, NODE_FEATURES, DeviceAdapter, DeviceFitCalibrator, DeviceSubspaceCalibrator, EncodedGraph,
    MultiDeviceConfig, MultiDeviceModel, encode_graph, fit_multi_device, pack_encodings, unpack_encodings,
)
from perfpredict.transfer.predictors import (
    CARD_FILE, MULTIDEVICE_FILE, PARTS, TRANSFER_FORMAT, TRANSFER_VERSION, CalibratedPredictor, MultiDevicePredictor,
    load_any_predictor, precision_parts,
)
from perfpredict.transfer.proxies import (
    INT8_DOT_PRODUCT, PROXY_MIN_SHARED, amdahl_latency, amdahl_pairs, amdahl_through, fingerprint_ratio,
    fingerprint_similarity, int8_dot_product, nearest_proxy, parallel_fraction, training_devices_at,
    zero_shot_proxies,
)
from perfpredict.transfer.selection import (
    DEFAULT_METHODS, EnsembleCalibrator, Selection, average_calibrators, best_scaled_column, calibrate,
    cross_validate, cv_predictions, rank_sources, select_calibrator, transfer_metrics,
)
from perfpredict.transfer.shots import SHOT_PLANS, choose_candidates, choose_shots, measure_candidates, shot_candidates

__all__ = [
    "TransferError",
    "Calibrator",
    "CALIBRATORS",
    "register_calibrator",
    "calibrator_from_dict",
    "ScaleCalibrator",
    "SplitScaleCalibrator",
    "LogLinearCalibrator",
    "IsotonicCalibrator",
    "MixtureCalibrator",
    "transfer_metrics",
    "Selection",
    "cv_predictions",
    "cross_validate",
    "DEFAULT_METHODS",
    "select_calibrator",
    "average_calibrators",
    "EnsembleCalibrator",
    "calibrate",
    "rank_sources",
    "best_scaled_column",
    "parallel_fraction",
    "amdahl_latency",
    "amdahl_through",
    "amdahl_pairs",
    "fingerprint_similarity",
    "fingerprint_ratio",
    "PROXY_MIN_SHARED",
    "INT8_DOT_PRODUCT",
    "int8_dot_product",
    "zero_shot_proxies",
    "nearest_proxy",
    "training_devices_at",
    "ENCODING_VERSION",
    "NODE_FEATURES",
    "EncodedGraph",
    "encode_graph",
    "pack_encodings",
    "unpack_encodings",
    "DeviceFitCalibrator",
    "DeviceSubspaceCalibrator",
    "MultiDeviceConfig",
    "MultiDeviceModel",
    "fit_multi_device",
    "DeviceAdapter",
    "Measurement",
    "beacon_normalised",
    "read_measurements",
    "write_measurements",
    "TRANSFER_FORMAT",
    "TRANSFER_VERSION",
    "CARD_FILE",
    "MULTIDEVICE_FILE",
    "MultiDevicePredictor",
    "load_any_predictor",
    "PARTS",
    "precision_parts",
    "CalibratedPredictor",
    "choose_shots",
    "SHOT_PLANS",
    "shot_candidates",
    "choose_candidates",
    "measure_candidates",
    "TransferResult",
    "adapt_predictor",
    "BOARD_FIT_FIELDS",
    "scaled_board",
    "fit_board",
]
