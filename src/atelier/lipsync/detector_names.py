"""The face detectors `detect.make_detector` builds, by name, importable without numpy or cv2.

Every `atelier` process builds the whole parser, whose `--detector` offers these choices;
`detect.py` (numpy, OpenCV) is imported only when a lip-sync verb runs.
"""

DETECTORS = ("retinaface", "opencv", "mtcnn", "s3fd")  # the first is the default
