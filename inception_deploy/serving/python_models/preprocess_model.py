"""Triton Python-backend model: encoded image bytes -> the network's input, by the recipe.

Copied as model.py by `inception-deploy package --with-preprocessing`, the first step of an
ensemble (image bytes -> this model -> the network), the shape of Triton's own
image-classification examples. It applies inception-deploy's one preprocessing function
(`inception_deploy.data.preprocess`) with the recipe's settings (preprocessing.json beside
this file), so the server preprocesses exactly as validation, calibration and export did: a
second implementation here could drift from it unseen. Needs inception-deploy (its data
module: numpy and pillow) in the Python backend's environment.

Input: a BYTES tensor [N, 1], one encoded image (PNG, JPEG, ...) per element. A request with
an undecodable image gets an error response naming the element; other requests are served.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        try:
            from inception_deploy.data import decode_image, preprocess
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                f"this model applies inception-deploy's preprocessing, which does not import here ({exc}); "
                "pip install inception-deploy into the Python backend's environment") from None
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        # Written by `package` from the validated recipe; read as plain attributes so the backend's
        # environment needs only inception_deploy.data (numpy, pillow), not the recipe schema.
        self.settings = SimpleNamespace(**json.loads((folder / "preprocessing.json").read_text()))
        self.decode, self.preprocess = decode_image, preprocess
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy().reshape(-1)
            try:
                images = []
                for index, item in enumerate(encoded):
                    try:
                        images.append(self.decode(item))
                    except (OSError, ValueError) as exc:
                        raise ValueError(f"image {index} of the request cannot be decoded ({exc})") from None
                batch = self.preprocess(images, self.settings)
            except Exception as exc:  # noqa: BLE001 - this request fails, the others are served
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)[:500])))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, batch)]))
        return responses
