"""Users' data: dataset folders (:mod:`.dataset`), preprocessing (:mod:`.preprocessing`), the
preprocessed case cache with on-device augmentation (:mod:`.cache`) and synthetic phantoms
(:mod:`.phantoms`). Import the submodules directly; this package imports nothing heavy.
"""
