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

PINNED = {'weights_sha256': 'becc76c5d4c91a73a7fbca6549b96ef02b902af395d451d494586bdf5ed66ddd',
 'steps': 0,
 'slice': {'frame': 'cvc-clinicdb/images/1.png',
           'fov': [42, 15, 360, 282],
           'pixels': [[219, 46],
                      [232, 220],
                      [278, 115],
                      [183, 88],
                      [190, 104],
                      [51, 187],
                      [193, 229],
                      [282, 63]],
           'sequence': {'next_frame': 'cvc-clinicdb/images/2.png',
                        'pixels': [[186, 163], [187, 163], [176, 147]],
                        'prob': [0.304156, 0.451532, 0.308997],
                        'moved_by_memory': [0.139687, 0.128703, 0.123241]},
           'prob': [0.499517, 0.888688, 0.58556, 0.971709, 0.999624, 5.8e-05, 0.000143, 0.0],
           'prob_k2': [0.778092, 0.921535, 0.799576, 0.980899, 0.999606, 7.8e-05, 0.000185, 0.0],
           'presence': 0.999738,
           'box': [40, 167, 250, 279],
           'mask_pixels': 16063},
 'predict_images': ['kvasir-seg/images/cju6vvxsev9y30987kespucdg.jpg',
                    'kvasir-seg/images/cju7ezs7g2mxm098787atbran.jpg',
                    'kvasir-seg/images/cju85omszllp30850b6rm9mi3.jpg',
                    'kvasir-seg/images/cju88q6h6obpd0871ckmiabbo.jpg',
                    'kvasir-seg/images/cju17otoe119u0799nqcbl8n1.jpg',
                    'cvc-clinicdb/images/51.png',
                    'cvc-clinicdb/images/206.png'],
 'predict_dice': 0.8674,
 'eval': {'sequence': 23, 'frames': 12, 'meanDice': 0.651, 'S': 0.7659},
 'demo_dice': 0.814,
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
                 'measured_min_ratio': {'interior': 5.05, 'background': 4.44}},
 'floors': {'predict_dice': 0.82,
            'eval_meanDice': 0.61,
            'demo_dice': 0.77,
            'uncertainty_ratio': {'interior': 2.52, 'background': 2.22}}}
