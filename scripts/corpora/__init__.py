"""Readers of the text corpora that the scripts here turn into data sets.

`sword` reads Bible modules in the SWORD zText format and `versification`
holds the verse tables they are indexed by. Scripts in scripts/ import this
package as `corpora` (Python puts a script's own directory on sys.path).
"""
