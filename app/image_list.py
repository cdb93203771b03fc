"""The image list: status icon per image, filters by tag and status, counts, and review order.

Rows show file names (the relative path is the tooltip), elided in the middle so long names keep
their distinctive end. Review order sorts by pseudo-label uncertainty (share of unsure pixels) so
the worst images come first; the scores are computed in the background (`app.review`), with a
progress bar and a Cancel button here.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.project import ListEntry
from app.style import STATUS_LABELS, icon, status_icon
from oste_core.editing import review_order

ALL = ""
NOT_TAGGED = "not tagged"  # the status filter's "Not tagged yet": images without tags (not trained on)
STEM_ROLE = Qt.ItemDataRole.UserRole


class ImageList(QWidget):
    """List + filters + counts + "review order" controls."""

    currentChanged = Signal(str)  # stem ("" when nothing is selected)
    uncertaintyRequested = Signal()
    reviewCancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: dict[str, ListEntry] = {}
        self._order: list[str] = []  # the project order, restored by "Folder order"
        self._items: dict[str, QListWidgetItem] = {}
        self._by_uncertainty = False

        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by name")
        self.search.setClearButtonEnabled(True)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All statuses", ALL)
        for key, title in STATUS_LABELS.items():
            self.status_filter.addItem(status_icon(key), title, key)
        self.status_filter.addItem("Not tagged yet", NOT_TAGGED)
        self.tag_filter = QComboBox()
        self.tag_filter.addItem("All tags", ALL)
        for widget in (self.search, self.status_filter, self.tag_filter):
            widget.setToolTip("Show only matching images")
        self.search.textChanged.connect(self._apply_filters)
        self.status_filter.currentIndexChanged.connect(self._apply_filters)
        self.tag_filter.currentIndexChanged.connect(self._apply_filters)

        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.currentItemChanged.connect(self._on_current)
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self._counts_timer = QTimer(self)  # coalesces count updates of many entry changes
        self._counts_timer.setSingleShot(True)
        self._counts_timer.setInterval(0)
        self._counts_timer.timeout.connect(self._update_counts)

        self.review_button = QPushButton(icon("fa5s.sort-amount-down"), "Review order")
        self.review_button.setToolTip("Sort by pseudo-label uncertainty, worst first (runs inference on the folder)")
        self.review_button.clicked.connect(self.uncertaintyRequested)
        self.name_button = QPushButton("Folder order")
        self.name_button.clicked.connect(lambda: self.set_sort_by_uncertainty(False))
        self.sort_progress = QProgressBar()
        self.sort_progress.setFormat("scoring %v / %m")
        self.sort_progress.hide()
        self.cancel_review_button = QPushButton(icon("fa5s.times"), "Cancel")
        self.cancel_review_button.setToolTip("Stop scoring; the images scored so far keep their score")
        self.cancel_review_button.clicked.connect(self.reviewCancelRequested)
        self.cancel_review_button.hide()

        filters = QHBoxLayout()
        filters.addWidget(self.status_filter, 1)
        filters.addWidget(self.tag_filter, 1)
        sort_row = QHBoxLayout()
        sort_row.addWidget(self.review_button, 1)
        sort_row.addWidget(self.name_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addLayout(filters)
        layout.addWidget(self.list, 1)
        layout.addLayout(sort_row)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.sort_progress, 1)
        progress_row.addWidget(self.cancel_review_button)
        layout.addLayout(progress_row)
        layout.addWidget(self.counts)
        self._update_counts()

    # ----------------------------------------------------------- content
    def set_entries(self, entries: list[ListEntry], class_names: list[str]) -> None:
        """Replace the list (a newly opened project)."""
        self._entries = {e.stem: e for e in entries}
        self._order = [e.stem for e in entries]
        self._by_uncertainty = False
        self.list.blockSignals(True)
        self.list.clear()
        self._items = {}
        for entry in entries:
            item = QListWidgetItem()
            item.setData(STEM_ROLE, entry.stem)
            self._items[entry.stem] = item
            self._render(item, entry)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.set_class_names(class_names)
        self._apply_filters()

    def set_class_names(self, class_names: list[str]) -> None:
        current = self.tag_filter.currentData()
        self.tag_filter.blockSignals(True)
        self.tag_filter.clear()
        self.tag_filter.addItem("All tags", ALL)
        for name in class_names:
            self.tag_filter.addItem(name, name)
        self.tag_filter.setCurrentIndex(max(self.tag_filter.findData(current), 0))
        self.tag_filter.blockSignals(False)

    def update_entry(self, entry: ListEntry) -> None:
        """Refresh one image's icon, text and filter visibility (counts follow, batched)."""
        item = self._items.get(entry.stem)
        if item is None:
            return
        self._entries[entry.stem] = entry
        self._render(item, entry)
        item.setHidden(not self._matches(entry))
        self._counts_timer.start()

    def entry(self, stem: str) -> ListEntry | None:
        return self._entries.get(stem)

    @staticmethod
    def _render(item: QListWidgetItem, entry: ListEntry) -> None:
        text = entry.display_name + (" *" if entry.unsaved else "") + ("" if entry.tagged else "  (not tagged yet)")
        if entry.uncertainty is not None:
            text += f"   {entry.uncertainty:.0%}"
        item.setText(text)
        item.setIcon(status_icon(entry.status))
        tags = ", ".join(entry.tags) or "(none)"
        if not entry.tagged:
            tags = "not tagged yet: tick its classes (or accept the suggested ones) to train on it"
        tip = [f"{entry.rel or entry.stem}: {STATUS_LABELS[entry.status]}", f"tags: {tags}"]
        if entry.uncertainty is not None:
            tip.append(f"unsure pixels in the pseudo-label: {entry.uncertainty:.1%}")
        if entry.unsaved:
            tip.append("unsaved edits")
        if entry.message:
            tip.append(entry.message)
        item.setToolTip("\n".join(tip))

    # --------------------------------------------------------- selection
    def current_stem(self) -> str:
        item = self.list.currentItem()
        return item.data(STEM_ROLE) if item is not None else ""

    def select_stem(self, stem: str) -> None:
        item = self._items.get(stem)
        if item is not None:
            self.list.setCurrentItem(item)

    def visible_stems(self) -> list[str]:
        """Stems in display order that pass the filters."""
        items = (self.list.item(row) for row in range(self.list.count()))
        return [item.data(STEM_ROLE) for item in items if not item.isHidden()]

    def step(self, delta: int) -> None:
        """Select the previous (-1) or next (+1) visible image (A / D)."""
        stems = self.visible_stems()
        if not stems:
            return
        current = self.current_stem()
        position = stems.index(current) + delta if current in stems else 0
        self.select_stem(stems[min(max(position, 0), len(stems) - 1)])

    def _on_current(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self.currentChanged.emit(current.data(STEM_ROLE) if current is not None else "")

    # ----------------------------------------------------------- filters
    def _matches(self, entry: ListEntry) -> bool:
        status, tag = self.status_filter.currentData(), self.tag_filter.currentData()
        needle = self.search.text().strip().lower()
        status_ok = not status or (not entry.tagged if status == NOT_TAGGED else entry.status == status)
        return (status_ok and (not tag or tag in entry.tags)
                and (not needle or needle in (entry.rel or entry.stem).lower()))

    def _apply_filters(self) -> None:
        for stem, item in self._items.items():
            item.setHidden(not self._matches(self._entries[stem]))
        self._update_counts()

    def _update_counts(self) -> None:
        entries = list(self._entries.values())
        shown = len(self.visible_stems())
        by_status = {key: sum(e.status == key for e in entries) for key in STATUS_LABELS}
        parts = [f"{by_status[key]} {title.lower()}" for key, title in STATUS_LABELS.items() if by_status[key]]
        not_tagged = sum(not e.tagged for e in entries)
        parts += [f"{not_tagged} not tagged yet"] if not_tagged else []
        self.counts.setText(f"{shown} of {len(entries)} images shown" + (" · " + " · ".join(parts) if parts else ""))

    # -------------------------------------------------------------- sort
    def set_sort_progress(self, done: int, total: int) -> None:
        """Progress of the uncertainty computation (hidden when done == total)."""
        self.sort_progress.setRange(0, max(total, 1))
        self.sort_progress.setValue(done)
        self.sort_progress.setVisible(done < total)
        self.cancel_review_button.setVisible(done < total)
        self.review_button.setEnabled(done >= total)

    def set_sort_by_uncertainty(self, enabled: bool) -> None:
        """Order by uncertainty, worst first (images without a score last), or back to folder order."""
        self._by_uncertainty = enabled
        stems = list(self._order)
        if enabled:
            scored = [(s, self._entries[s].uncertainty) for s in stems if self._entries[s].uncertainty is not None]
            ordered = review_order(scored)
            scored_stems = set(ordered)
            stems = ordered + [s for s in stems if s not in scored_stems]
        self._reorder(stems)

    def show_not_tagged_first(self, first: list[str]) -> None:
        """Show only the images not tagged yet, ``first`` (e.g. most uncertain suggestion first) leading."""
        self._by_uncertainty = False
        leading = set(first)
        self.status_filter.blockSignals(True)
        self.status_filter.setCurrentIndex(self.status_filter.findData(NOT_TAGGED))
        self.status_filter.blockSignals(False)
        self._reorder([s for s in first if s in self._items] + [s for s in self._order if s not in leading])
        if first:
            self.select_stem(first[0])

    def _reorder(self, stems: list[str]) -> None:
        current = self.current_stem()
        self.list.blockSignals(True)
        while self.list.count():
            self.list.takeItem(self.list.count() - 1)
        for stem in stems:
            self.list.addItem(self._items[stem])
        self.list.blockSignals(False)
        self.select_stem(current)
        self._apply_filters()

    def sorted_by_uncertainty(self) -> bool:
        return self._by_uncertainty
