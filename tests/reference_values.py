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

PINNED = {'weights_sha256': 'f3b9685953aadfe0fc047e1d15b306a248f7b4f6becf32903b1b25264c3b83bc',
 'steps': 0,
 'slice': {'frame': 'cvc-clinicdb/images/1.png',
           'fov': [42, 15, 360, 282],
           'pixels': [[213, 187],
                      [235, 42],
                      [277, 262],
                      [182, 132],
                      [190, 122],
                      [51, 166],
                      [193, 159],
                      [282, 63]],
           'sequence': {'next_frame': 'cvc-clinicdb/images/2.png',
                        'pixels': [[186, 67], [186, 66], [187, 67]],
                        'prob': [0.701069, 0.704229, 0.708194],
                        'moved_by_memory': [0.061749, 0.060912, 0.060803]},
           'prob': [0.475568, 0.745654, 0.869115, 0.999442, 0.999952, 7e-06, 0.001997, 0.0],
           'prob_k2': [0.005555, 0.745709, 0.788589, 0.999716, 0.999817, 1e-05, 0.00052, 0.0],
           'presence': 0.99989,
           'box': [40, 167, 275, 280],
           'mask_pixels': 16261},
 'predict_images': ['kvasir-seg/images/cju6vvxsev9y30987kespucdg.jpg',
                    'kvasir-seg/images/cju7ezs7g2mxm098787atbran.jpg',
                    'kvasir-seg/images/cju85omszllp30850b6rm9mi3.jpg',
                    'kvasir-seg/images/cju88q6h6obpd0871ckmiabbo.jpg',
                    'kvasir-seg/images/cju17otoe119u0799nqcbl8n1.jpg',
                    'cvc-clinicdb/images/51.png',
                    'cvc-clinicdb/images/206.png'],
 'predict_dice': 0.8961,
 'eval': {'sequence': 23, 'frames': 12, 'meanDice': 0.7386, 'S': 0.8273},
 'demo_dice': 0.8169,
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
                 'measured_min_ratio': {'interior': 6.5, 'background': 5.53}},
 'floors': {'predict_dice': 0.85,
            'eval_meanDice': 0.69,
            'demo_dice': 0.77,
            'uncertainty_ratio': {'interior': 3.25, 'background': 2.77}}}
