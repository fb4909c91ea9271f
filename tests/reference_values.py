"""Pinned reference values and quality floors of the shipped weights: the one place tests read them.

Written by `.venv/bin/python tools/pin_reference.py --write` (re-pin in that one command after the
weights or the shipped `steps` change); measured on vm (2 CPUs). The floors sit under the measured
values by the margins stated in tools/pin_reference.py, so a broken model fails them:
- predict_dice: `endostream predict` at the shipped settings on PINNED["predict_images"], mean Dice;
- eval_meanDice: `endostream eval images=<ClinicDB sequence 23> masks=... sequence=true`;
- demo_dice: `endostream demo max_frames=50 transport.mode=lossless`, Dice of the shown masks;
- slice: the torch backend on one real frame (probabilities at fixed pixels at the shipped steps
  and at K=2, presence, box) and on the next frame of its sequence (temporal memory filled);
- uncertainty: spread in a band around the predicted border over the interior's / background's.
"""

PINNED = {'weights_sha256': 'd1cd1fb89093b6ce9a06a32a93a03df24093e2cfdbc0c7e7c8b9048e70f48cbe',
 'steps': 0,
 'slice': {'frame': 'cvc-clinicdb/images/1.png',
           'fov': [42, 15, 360, 282],
           'pixels': [[220, 75],
                      [233, 71],
                      [278, 110],
                      [183, 96],
                      [190, 103],
                      [51, 229],
                      [194, 252],
                      [282, 63]],
           'sequence': {'next_frame': 'cvc-clinicdb/images/2.png',
                        'pixels': [[206, 202], [206, 203], [207, 202]],
                        'prob': [0.689539, 0.58416, 0.821437],
                        'moved_by_memory': [0.199501, 0.193531, 0.18581]},
           'prob': [0.780388, 0.885103, 0.617494, 0.990159, 0.999399, 9.7e-05, 0.000971, 0.0],
           'prob_k2': [0.350221, 0.990315, 0.994656, 0.999961, 0.999993, 0.0, 0.0, 0.0],
           'presence': 0.999935,
           'box': [42, 164, 265, 284],
           'mask_pixels': 15684},
 'predict_images': ['kvasir-seg/images/cju6vvxsev9y30987kespucdg.jpg',
                    'kvasir-seg/images/cju7ezs7g2mxm098787atbran.jpg',
                    'kvasir-seg/images/cju85omszllp30850b6rm9mi3.jpg',
                    'kvasir-seg/images/cju88q6h6obpd0871ckmiabbo.jpg',
                    'kvasir-seg/images/cju17otoe119u0799nqcbl8n1.jpg',
                    'cvc-clinicdb/images/51.png',
                    'cvc-clinicdb/images/206.png'],
 'predict_dice': 0.8654,
 'eval': {'sequence': 23, 'frames': 12, 'meanDice': 0.7122, 'S': 0.8082},
 'demo_dice': 0.8238,
 'uncertainty': {'samples': 8,
                 'band_px': 2,
                 'images': ['kvasir-seg/images/cju6vvxsev9y30987kespucdg.jpg',
                            'kvasir-seg/images/cju7ezs7g2mxm098787atbran.jpg',
                            'kvasir-seg/images/cju85omszllp30850b6rm9mi3.jpg',
                            'kvasir-seg/images/cju88q6h6obpd0871ckmiabbo.jpg',
                            'kvasir-seg/images/cju17otoe119u0799nqcbl8n1.jpg',
                            'cvc-clinicdb/images/51.png',
                            'cvc-clinicdb/images/206.png',
                            'cvc-clinicdb/images/1.png'],
                 'measured_min_ratio': {'interior': 2.05, 'background': 4.25}},
 'floors': {'predict_dice': 0.82,
            'eval_meanDice': 0.67,
            'demo_dice': 0.78,
            'uncertainty_ratio': {'interior': 1.5, 'background': 2.12}}}
