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

PINNED = {'weights_sha256': '767b448e0b938936b0958ed9a07753b9eda934321a6d5c9578dade8216a421cc',
 'steps': 0,
 'slice': {'frame': 'cvc-clinicdb/images/1.png',
           'fov': [42, 15, 360, 282],
           'pixels': [[216, 67],
                      [233, 227],
                      [278, 211],
                      [182, 120],
                      [190, 93],
                      [51, 177],
                      [193, 257],
                      [282, 63]],
           'sequence': {'next_frame': 'cvc-clinicdb/images/2.png',
                        'pixels': [[146, 95], [146, 96], [146, 94]],
                        'prob': [0.219412, 0.201909, 0.250778],
                        'moved_by_memory': [0.183367, 0.177863, 0.170728]},
           'prob': [0.869471, 0.13631, 0.82027, 0.999993, 0.994457, 0.000143, 0.000267, 0.0],
           'prob_k2': [0.904745, 0.034863, 0.948169, 0.999854, 0.985312, 3.5e-05, 8.6e-05, 0.0],
           'presence': 0.999818,
           'box': [43, 168, 249, 277],
           'mask_pixels': 16370},
 'predict_images': ['kvasir-seg/images/cju6vvxsev9y30987kespucdg.jpg',
                    'kvasir-seg/images/cju7ezs7g2mxm098787atbran.jpg',
                    'kvasir-seg/images/cju85omszllp30850b6rm9mi3.jpg',
                    'kvasir-seg/images/cju88q6h6obpd0871ckmiabbo.jpg',
                    'kvasir-seg/images/cju17otoe119u0799nqcbl8n1.jpg',
                    'cvc-clinicdb/images/51.png',
                    'cvc-clinicdb/images/206.png'],
 'predict_dice': 0.876,
 'eval': {'sequence': 23, 'frames': 12, 'meanDice': 0.7399, 'S': 0.8173},
 'demo_dice': 0.8116,
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
                 'measured_min_ratio': {'interior': 4.85, 'background': 12.63}},
 'floors': {'predict_dice': 0.83,
            'eval_meanDice': 0.69,
            'demo_dice': 0.77,
            'uncertainty_ratio': {'interior': 2.42, 'background': 6.32}}}
