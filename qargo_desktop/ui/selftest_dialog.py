"""The self-test dialog: live steps, the verdict, a timeline of the legs, and the report.

The test itself is :mod:`qargo_desktop.core.selftest`; this dialog runs it through the
window's task runner, shows each step as it happens, and offers Cancel, Run again, Copy
report and Save report (text or JSON).

Its words are translated like the rest of the window's (context ``SelfTestDialog``). The
step titles and verdict labels are the core's fixed English words, translated when they
are shown (context ``selftest``, marked in ``resources/translations/core_words.py``). What
the core words at run time (each step's message, the summary and the advice of a verdict)
stays English, as the saved report does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QCoreApplication, QEvent, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qargo_desktop.core.identity import InteractiveControl
from qargo_desktop.core.models import LinkStatus, Mailbox
from qargo_desktop.core.selftest import (
    STEPS,
    Leg,
    SelfTestOptions,
    SelfTestReport,
    StepId,
    StepReport,
    StepState,
    Verdict,
    run_selftest,
    save_report,
)
from qargo_desktop.ui import texts
from qargo_desktop.ui.i18n import app_locale, translatable
from qargo_desktop.ui.tasks import Progress, TaskHandle, was_reported
from qargo_desktop.ui.theme import MessageLevel, Theme

if TYPE_CHECKING:
    from qargo_desktop.core.services import Services
    from qargo_desktop.ui.tasks import TaskRunner

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

# A symbol and a word per step state: colour never stands alone.
_STATE_SYMBOL = {
    StepState.PENDING: ("·", translatable("SelfTestDialog", "Waiting")),
    StepState.RUNNING: ("…", translatable("SelfTestDialog", "Running")),
    StepState.PASSED: ("✔", translatable("SelfTestDialog", "Passed")),
    StepState.WARNING: ("⚠", translatable("SelfTestDialog", "Warning")),
    StepState.FAILED: ("✖", translatable("SelfTestDialog", "Failed")),
    StepState.SKIPPED: ("-", translatable("SelfTestDialog", "Skipped")),
}

_STATE_COLOUR = {
    StepState.PASSED: LinkStatus.REAUTHORISATION_REQUIRED,  # the theme's green pair
    StepState.WARNING: LinkStatus.AUTHORISING,  # amber
    StepState.FAILED: LinkStatus.LINK_FAILED,  # red
    StepState.RUNNING: LinkStatus.LINKED,  # blue
}

_VERDICT_LEVEL = {
    Verdict.PASS: MessageLevel.INFO,
    Verdict.WARNING: MessageLevel.WARNING,
    Verdict.FAIL: MessageLevel.ERROR,
    Verdict.COULD_NOT_RUN: MessageLevel.ERROR,
    Verdict.CANCELLED: MessageLevel.WARNING,
}

_LEG_LABELS = {
    "submission": translatable("SelfTestDialog", "Submission"),
    "delivery": translatable("SelfTestDialog", "Delivery"),
    "sync": translatable("SelfTestDialog", "Qargo sync"),
}


def step_title(step: StepId) -> str:
    """What a step does, in the window's language (the core words it in English)."""
    return translate("selftest", step.title)


def verdict_label(verdict: Verdict) -> str:
    """The verdict in a word or two, in the window's language."""
    return translate("selftest", verdict.label)


def _state_word(state: StepState) -> str:
    return translate("SelfTestDialog", _STATE_SYMBOL[state][1])


def _leg_label(name: str) -> str:
    label = _LEG_LABELS.get(name)
    return translate("SelfTestDialog", label) if label is not None else name


def _seconds(value: float, decimals: int = 1) -> str:
    """A duration in seconds with the locale's decimal sign: ``2.5 s``, ``2,5 s``."""
    amount = app_locale().toString(float(value), "f", decimals)
    return translate("SelfTestDialog", "{seconds} s", "a duration").format(seconds=amount)


class TimelineChart(QWidget):
    """A small chart of the legs of the message's journey, on one time axis."""

    def __init__(self, theme: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._theme = theme
        self._legs: tuple[Leg, ...] = ()
        self.setMinimumHeight(96)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._retranslate()

    def set_legs(self, legs: tuple[Leg, ...]) -> None:
        """Show these legs (an empty tuple clears the chart)."""
        self._legs = legs
        self._retranslate()
        self.update()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the words up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
            self.update()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        self.setAccessibleName(translate("SelfTestDialog", "Timeline of the test message"))
        self.setAccessibleDescription(
            "; ".join(
                translate("SelfTestDialog", "{leg}: {duration}").format(
                    leg=_leg_label(leg.name), duration=self._duration(leg)
                )
                for leg in self._legs
            )
        )

    @staticmethod
    def _duration(leg: Leg) -> str:
        if leg.duration_s is None:
            return translate("SelfTestDialog", "did not end")
        return _seconds(leg.duration_s)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """Room for three rows and an axis."""
        return QSize(480, 96)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt name)
        """Draw one bar per leg, labelled with its duration."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_colour = self.palette().windowText().color()
        if not self._legs:
            painter.setPen(text_colour)
            painter.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                translate("SelfTestDialog", "No timings yet"),
            )
            return
        # Room for the longest leg's name: some languages need more than English.
        names = [
            painter.fontMetrics().horizontalAdvance(_leg_label(leg.name)) for leg in self._legs
        ]
        label_width = max(90, max(names) + 12)
        right = self.width() - 70
        span = max((leg.start_s or 0.0) + (leg.duration_s or 0.0) for leg in self._legs) or 1.0
        if any(leg.duration_s is None for leg in self._legs):
            # Leave room for a leg that never ended to show as an open, dashed bar.
            span *= 1.3
        scale = (right - label_width) / span
        row_height = max(18, (self.height() - 18) // max(1, len(self._legs)))
        for row, leg in enumerate(self._legs):
            top = row * row_height + 2
            painter.setPen(text_colour)
            painter.drawText(
                QRectF(0, top, label_width - 6, row_height - 4),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                _leg_label(leg.name),
            )
            status = _STATE_COLOUR.get(leg.state, LinkStatus.UNLINKED)
            pair = self._theme.colours(status)
            start = label_width + (leg.start_s or 0.0) * scale
            if leg.duration_s is None:
                width = max(40.0, right - start)
                start = min(start, right - width)
                painter.setPen(QPen(QColor(pair.foreground), 1, Qt.PenStyle.DashLine))
                painter.setBrush(QColor(pair.background))
                painter.drawRoundedRect(QRectF(start, top + 3, width, row_height - 10), 3, 3)
                painter.setPen(QColor(pair.foreground))
                painter.drawText(
                    QRectF(start + 4, top, width - 4, row_height - 4),
                    Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                    self._duration(leg),
                )
                continue
            width = max(3.0, leg.duration_s * scale)
            painter.setPen(QPen(QColor(pair.foreground), 1))
            painter.setBrush(QColor(pair.foreground))
            caption = _seconds(leg.duration_s)
            painter.drawRoundedRect(QRectF(start, top + 3, width, row_height - 10), 3, 3)
            painter.setPen(text_colour)
            painter.drawText(
                QRectF(start + width + 4, top, 70, row_height - 4),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                caption,
            )
        axis_y = len(self._legs) * row_height + 4
        painter.setPen(QPen(text_colour, 1))
        painter.drawLine(label_width, axis_y, right, axis_y)
        painter.drawText(
            QRectF(right - 60, axis_y, 60, 14),
            Qt.AlignmentFlag.AlignRight,
            _seconds(span),
        )
        painter.drawText(
            QRectF(label_width, axis_y, 60, 14), Qt.AlignmentFlag.AlignLeft, _seconds(0, 0)
        )


class SelfTestDialog(QDialog):
    """Runs the send/receive self-test of one mailbox and shows where the time goes.

    Signals:
        finished_with(object): The run ended; carries the :class:`SelfTestReport`.
        sign_in_link_offered(str): The test needs a browser sign-in; carries the link.
    """

    finished_with = Signal(object)
    sign_in_link_offered = Signal(str)

    def __init__(
        self,
        parent: QWidget | None,
        *,
        mailbox: Mailbox,
        services: Services,
        tasks: TaskRunner,
        theme: Theme,
        data_dir: Path | None = None,
        opener: Callable[[str], bool] | None = None,
        options: SelfTestOptions | None = None,
    ) -> None:
        super().__init__(parent)
        self.options = options
        self.mailbox = mailbox
        self._services = services
        self._tasks = tasks
        self._theme = theme
        self._data_dir = data_dir
        self._opener = opener
        self._handle: TaskHandle | None = None
        self._started = 0.0
        self._cancelling = False
        self.report: SelfTestReport | None = None
        # What the dialog shows, kept to word it again when the language changes.
        self._shown: dict[StepId, StepReport] = {}
        self._sign_in_link: str | None = None
        self._error: BaseException | None = None

        self.setMinimumWidth(760)
        layout = QVBoxLayout(self)

        self.heading = QLabel(self)
        font = QFont(self.heading.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.heading.setFont(font)
        self.intro = QLabel(self)
        self.intro.setWordWrap(True)
        self.elapsed = QLabel(self)

        self.steps = QTreeWidget(self)
        self.steps.setColumnCount(4)
        self.steps.setRootIsDecorated(False)
        self.steps.setUniformRowHeights(True)
        self.steps.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.steps.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._items: dict[StepId, QTreeWidgetItem] = {}
        for step in STEPS:
            item = QTreeWidgetItem(["", step_title(step), "", ""])
            self.steps.addTopLevelItem(item)
            self._items[step] = item
        for column, width in ((0, 28), (1, 320), (2, 60)):
            self.steps.setColumnWidth(column, width)
        self.steps.setMinimumHeight(170)

        self.verdict = QLabel(self)
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.PlainText)
        self.verdict.setMargin(8)
        self.chart = TimelineChart(theme, self)
        self._build_buttons()

        for widget in (
            self.heading,
            self.intro,
            self.elapsed,
            self.steps,
            self.verdict,
            self.chart,
        ):
            layout.addWidget(widget)
        layout.addWidget(self.buttons)

        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._on_tick)
        self._retranslate()
        self._set_running(False)

    def _build_buttons(self) -> None:
        self.buttons = QDialogButtonBox(self)
        self.cancel_button = QPushButton(self)
        self.again_button = QPushButton(self)
        self.copy_button = QPushButton(self)
        self.save_button = QPushButton(self)
        self.close_button = QPushButton(self)
        for button, role in (
            (self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole),
            (self.again_button, QDialogButtonBox.ButtonRole.ActionRole),
            (self.copy_button, QDialogButtonBox.ButtonRole.ActionRole),
            (self.save_button, QDialogButtonBox.ButtonRole.ActionRole),
            (self.close_button, QDialogButtonBox.ButtonRole.AcceptRole),
        ):
            button.setAutoDefault(False)
            self.buttons.addButton(button, role)
        self.cancel_button.clicked.connect(self.cancel)
        self.again_button.clicked.connect(self.start)
        self.copy_button.clicked.connect(self.copy_report)
        self.save_button.clicked.connect(self.save_report_as)
        self.close_button.clicked.connect(self.accept)

    # -- running ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._handle is not None

    def start(self) -> None:
        """Start a run (again)."""
        if self.running:
            return
        self.report = None
        self._error = None
        self._cancelling = False
        self._sign_in_link = None
        for step, item in self._items.items():
            self._show_step(StepReport(step, StepState.PENDING, 0.0, ""), item)
        self.verdict.clear()
        self.verdict.setStyleSheet("")
        self.chart.set_legs(())
        services = self._services
        address = self.mailbox.address
        opener = self._opener
        options = self.options
        data_dir = self._data_dir

        def work(cancel: threading.Event, progress: Progress) -> SelfTestReport:
            control = InteractiveControl(
                cancel=cancel,
                deadline_s=services.sign_in_timeout_s,
                on_auth_uri=lambda url: progress(("auth_uri", url)),
                on_browser_failed=lambda url: progress(("auth_uri", url)),
            )
            if opener is not None:
                control.opener = opener
            report = run_selftest(
                services,
                address,
                options=options,
                on_step=lambda step: progress(("step", step)),
                cancel=cancel,
                control=control,
            )
            if data_dir is not None:
                # Kept here, on the worker: the GUI thread does no file I/O.
                try:
                    save_report(report, data_dir)
                except OSError as exc:
                    log.warning("Could not keep the self-test report: %s", exc)
            return report

        self._started = time.monotonic()
        self._handle = self._tasks.start(
            f"self-test of {address}",
            work,
            on_finished=self._on_finished,
            on_progress=self._on_progress,
        )
        self._set_running(True)
        self._timer.start()
        self._on_tick()
        log.info("Self-test of %s started from the window", address)

    def cancel(self) -> None:
        """Stop the run; the core cleans up what it already did."""
        if self._handle is not None:
            self._handle.cancel()
            self._cancelling = True
            self.cancel_button.setEnabled(False)
            self._show_elapsed()

    def _on_progress(self, value: object) -> None:
        if not isinstance(value, tuple):
            return
        kind, payload = value
        if kind == "step" and isinstance(payload, StepReport):
            self._show_step(payload, self._items[payload.id])
        elif kind == "auth_uri":
            self.sign_in_link_offered.emit(str(payload))
            self._sign_in_link = str(payload)
            self._show_sign_in_link()

    def _show_sign_in_link(self) -> None:
        if self._sign_in_link is None:
            return
        self._items[StepId.TOKEN].setText(
            3,
            translate(
                "SelfTestDialog",
                "Sign in as the mailbox in your browser. If it did not open, copy this link "
                "into a private window: {link}",
            ).format(link=self._sign_in_link),
        )

    def _on_finished(self, result: Any, error: BaseException | None) -> None:
        self._handle = None
        self._timer.stop()
        if error is not None:
            self._set_running(False)
            # run_selftest reports service failures in its report; this is a bug.
            if not was_reported(error):  # the crash report has it already
                log.error("The self-test stopped unexpectedly", exc_info=error)
            self._error = error
            self._show_error()
            return
        assert isinstance(result, SelfTestReport)
        self.report = result
        self._set_running(False)
        for step in result.steps:
            self._show_step(step, self._items[step.id])
        self._show_verdict(result)
        self.chart.set_legs(result.legs)
        self._show_elapsed()
        self.finished_with.emit(result)

    def _show_step(self, step: StepReport, item: QTreeWidgetItem) -> None:
        self._shown[step.id] = step
        if step.id is StepId.TOKEN:
            self._sign_in_link = None  # the step's own words replace the link
        word = _state_word(step.state)
        item.setText(0, _STATE_SYMBOL[step.state][0])
        item.setToolTip(0, word)
        item.setData(0, Qt.ItemDataRole.AccessibleTextRole, word)
        item.setText(1, step_title(step.id))
        item.setText(2, _seconds(step.elapsed_s) if step.state is not StepState.PENDING else "")
        # The message is worded at run time, in English; the advice is the core's fixed words.
        message = step.message
        if step.advice is not None and step.state in (StepState.FAILED, StepState.WARNING):
            message = f"{message} {texts.advice_summary(step.advice)}".strip()
        item.setText(3, message)
        item.setToolTip(3, message)
        status = _STATE_COLOUR.get(step.state)
        colour = self._theme.foreground(status) if status is not None else QColor()
        for column in range(4):
            if status is not None:
                item.setForeground(column, colour)
        item.setData(
            1,
            Qt.ItemDataRole.AccessibleTextRole,
            translate("SelfTestDialog", "{step}: {state}").format(
                step=step_title(step.id), state=word
            ),
        )

    def _show_verdict(self, report: SelfTestReport) -> None:
        pair = self._theme.message_colours(_VERDICT_LEVEL[report.verdict])
        # The summary and the advice are worded at run time, in English, like the report.
        heading = translate("SelfTestDialog", "{verdict}: {summary}").format(
            verdict=verdict_label(report.verdict), summary=report.summary
        )
        self.verdict.setText("\n".join([heading, *report.advice]))
        self.verdict.setStyleSheet(
            f"QLabel {{ color: {pair.foreground}; background: {pair.background}; "
            "border-radius: 4px; }"
        )
        self._fit()

    def _fit(self) -> None:
        # The verdict wraps: grow the dialog so every line of advice shows.
        layout = self.layout()
        if layout is not None:
            width = max(self.width(), self.minimumWidth())
            self.resize(width, max(self.height(), layout.heightForWidth(width)))

    def _show_error(self) -> None:
        if self._error is not None:
            self.verdict.setText(
                translate("SelfTestDialog", "The test stopped unexpectedly: {problem}").format(
                    problem=self._error
                )
            )

    def _show_elapsed(self) -> None:
        if self.running:
            if self._cancelling:
                self.elapsed.setText(translate("SelfTestDialog", "Cancelling..."))
            else:
                seconds = round(time.monotonic() - self._started)
                self.elapsed.setText(translate("SelfTestDialog", "Running for %n s", None, seconds))
        elif self.report is not None:
            self.elapsed.setText(
                translate("SelfTestDialog", "Finished in {duration}").format(
                    duration=_seconds(self.report.duration_s)
                )
            )

    def _on_tick(self) -> None:
        self._show_elapsed()

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(running)
        self.again_button.setEnabled(not running)
        has_report = self.report is not None and not running
        self.copy_button.setEnabled(has_report)
        self.save_button.setEnabled(has_report)
        self.close_button.setEnabled(not running)
        self.close_button.setDefault(not running)

    # -- the report ---------------------------------------------------------------------

    def copy_report(self) -> None:
        """Put the report, as text, on the clipboard."""
        if self.report is not None:
            QGuiApplication.clipboard().setText(self.report.to_text())

    def save_report_as(self) -> None:
        """Ask where to save the report; the file's extension picks text or JSON."""
        if self.report is None:
            return
        stamp = self.report.started_at.strftime("%Y%m%d-%H%M%S")
        suggested = f"selftest-{self.mailbox.address}-{stamp}.txt"
        path, chosen = QFileDialog.getSaveFileName(
            self,
            translate("SelfTestDialog", "Save self-test report"),
            suggested,
            translate("SelfTestDialog", "Text (*.txt);;JSON (*.json)"),
        )
        if path:
            self.write_report(Path(path), as_json=path.endswith(".json") or "*.json" in chosen)

    def write_report(self, path: Path, *, as_json: bool) -> None:
        """Write the report to ``path`` as text or JSON."""
        if self.report is None:
            return
        text = self.report.to_json() if as_json else self.report.to_text()
        path.write_text(text, encoding="utf-8")
        log.info("Saved a self-test report of %s", self.mailbox.address)

    # -- words --------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """Put the words up again when the language changes."""
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()
        super().changeEvent(event)

    def _retranslate(self) -> None:
        """Set every word the dialog shows, in the language installed now."""
        if not hasattr(self, "_timer"):
            return  # Qt can send LanguageChange while the dialog is still being built
        address = self.mailbox.address
        self.setWindowTitle(translate("SelfTestDialog", "Test {address}").format(address=address))
        self.heading.setText(
            translate("SelfTestDialog", "Send and receive test of {address}").format(
                address=address
            )
        )
        self.intro.setText(
            translate(
                "SelfTestDialog",
                "Sends one test message from the mailbox to itself, waits for it to arrive "
                "and for Qargo's sync to see it, then deletes it.",
            )
        )
        self.elapsed.setAccessibleName(translate("SelfTestDialog", "Elapsed time"))
        self.steps.setAccessibleName(translate("SelfTestDialog", "Test steps"))
        self.steps.setHeaderLabels(
            [
                "",
                translate("SelfTestDialog", "Step"),
                translate("SelfTestDialog", "Time"),
                translate("SelfTestDialog", "What happened"),
            ]
        )
        self.verdict.setAccessibleName(translate("SelfTestDialog", "Verdict"))
        self.cancel_button.setText(translate("SelfTestDialog", "Cancel"))
        self.again_button.setText(translate("SelfTestDialog", "&Run again"))
        self.copy_button.setText(translate("SelfTestDialog", "&Copy report"))
        self.save_button.setText(translate("SelfTestDialog", "&Save report..."))
        self.close_button.setText(translate("SelfTestDialog", "Close"))
        link = self._sign_in_link
        for step, item in self._items.items():
            shown = self._shown.get(step)
            if shown is None:
                item.setText(1, step_title(step))
            else:
                self._show_step(shown, item)
        # The step titles get the room they need in the language shown.
        self.steps.setColumnWidth(1, max(320, self.steps.sizeHintForColumn(1) + 8))
        if link is not None:
            self._sign_in_link = link
            self._show_sign_in_link()
        if self.report is not None:
            self._show_verdict(self.report)
        else:
            self._show_error()
        self._show_elapsed()

    # -- closing ------------------------------------------------------------------------

    def reject(self) -> None:
        """Escape or the close button: cancel a run first, then close."""
        if self.running:
            self.cancel()
            return
        super().reject()

    def done(self, result: int) -> None:
        """Never close while a run could still write to the dialog."""
        if self.running:
            self.cancel()
            return
        super().done(result)
