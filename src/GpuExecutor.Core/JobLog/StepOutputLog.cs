using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using GpuExecutor.Configuration;
using GpuExecutor.HostFiles;

namespace GpuExecutor.JobLog;

/// <summary>Where a job's whole step logs live on the host: state_dir/job-logs/job-ID/NN-STEP.log, compressed to .log.gz when the step ends.</summary>
public static class StepLogFiles
{
    public const string DirectoryName = "job-logs";
    public const string LiveSuffix = ".log";
    public const string CompressedSuffix = ".log.gz";
    private const string WriterLockSuffix = ".lock";
    private const string BudgetFileName = "job-log-bytes";

    public static string RootOf(string stateDir) => Path.Combine(stateDir, DirectoryName);

    public static string DirectoryOf(string stateDir, long jobId) => Path.Combine(RootOf(stateDir), "job-" + jobId.ToString(CultureInfo.InvariantCulture));

    /// <summary>Held by the step's writer for as long as it writes: a reader that follows the log stops once it is free.</summary>
    public static string WriterLock(string liveFile) => liveFile[..^LiveSuffix.Length] + WriterLockSuffix;

    public static string CompressedOf(string liveFile) => liveFile[..^LiveSuffix.Length] + CompressedSuffix;

    /// <summary>How many bytes of step output the job's log has shown in earlier steps: the budget is the job's, not each step's.</summary>
    public static string BudgetFile(string directory) => Path.Combine(directory, BudgetFileName);

    /// <summary>The job's steps in the order they ran, each as its live file while written, else its compressed one.</summary>
    public static IReadOnlyList<string> Steps(string directory) =>
        !Directory.Exists(directory)
            ? []
            : Directory.EnumerateFiles(directory)
                .Where(path => path.EndsWith(LiveSuffix, StringComparison.Ordinal) || path.EndsWith(CompressedSuffix, StringComparison.Ordinal))
                .GroupBy(StepOf, StringComparer.Ordinal)
                .OrderBy(group => group.Key, StringComparer.Ordinal)
                .Select(group => group.OrderBy(path => path.EndsWith(LiveSuffix, StringComparison.Ordinal) ? 0 : 1).First())
                .ToList();

    /// <summary>Which step a log file is ("NN-STEP"), live or compressed.</summary>
    public static string StepOf(string path) => Path.GetFileName(path).Split('.')[0];

    /// <summary>A stage name as a file name: the runner's names are plain, but nothing unplain gets through.</summary>
    public static string SafeStepName(string stageName)
    {
        var safe = new string(stageName.Select(character => char.IsAsciiLetterOrDigit(character) || character is '_' or '-' ? character : '_').ToArray());
        return safe.Length is > 0 and <= 100 ? safe : "step";
    }
}

/// <summary>What a step printed, once it ended.</summary>
/// <param name="HeldBackLines">Lines the job log did not show (past the live part of the budget).</param>
/// <param name="Incomplete">Why the file on the host lacks part of the output (a full disk), or null.</param>
public sealed record StepLogSummary(string Path, long Bytes, long Lines, long ShownBytes, long HeldBackLines, long HeldBackBytes, string? Incomplete = null);

/// <summary>
/// A job step's output on its way to the job log. All of it goes to a file on the host as it
/// streams; the job log gets it live until three quarters of logs.job_log_budget, then a
/// throttled view: one line in logs.sample_one_in (from the first half of the rest), every line
/// that matches logs.keep_patterns (from all of it), and now and then a line saying what was held
/// back and where the whole log is, until the budget is spent. So the job log stays under the runner's output_limit, and nothing is lost.
/// Memory stays flat whatever the step prints: lines are judged by their first 4 KiB.
/// </summary>
public sealed class StepOutputLog : IAsyncDisposable
{
    /// <summary>What of a line is kept for matching and shown in the throttled view; the rest of a longer line is counted, and said to be cut.</summary>
    public const int LinePrefixBytes = 4096;

    /// <summary>
    /// A full collection every this many bytes of output. Streaming allocates little of its own,
    /// but what Docker's read path leaves behind is promoted faster than the GC's defaults
    /// collect it: a stage printing 500 MiB grew from 44 to 124 MiB of RSS, and stays at 64
    /// with these (a collection of a small heap every 32 MiB costs milliseconds).
    /// </summary>
    private const long CollectEveryBytes = 32L << 20;

    /// <summary>Kept back from the budget for the notices and the end's summary.</summary>
    private const int NoticeReserve = 1024;

    private readonly LogSettings _settings;
    /// <summary>Every keep pattern in one: one pass over each line. Null when there are none.</summary>
    private readonly Regex? _keep;
    private readonly FileStream _file;
    private readonly HostLock _writerLock;
    private readonly string _livePath;
    private readonly string _budgetFile;
    private readonly string _whereLine;
    private readonly TimeProvider _clock;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly long _liveLimit;
    private readonly long _sampleLimit;
    private readonly long _budget;
    private readonly long _shownBefore;
    private readonly OutputStream _stdout;
    private readonly OutputStream _stderr;

    private long _bytes;
    private long _lines;
    private long _shown;
    private bool _throttled;
    private bool _spent;
    private long _throttledLines;
    private long _heldLines;
    private long _heldBytes;
    private long _heldSinceNotice;
    private DateTimeOffset _lastNotice;
    private StepLogSummary? _summary;

    /// <summary>Why the host file stopped being written; the job log goes on without it.</summary>
    private string? _fileFailure;

    private StepOutputLog(LogSettings settings, string livePath, FileStream file, HostLock writerLock, long shownBefore, Stream jobStdout, Stream jobStderr, string whereLine, TimeProvider clock)
    {
        _settings = settings;
        _keep = settings.KeepPatterns.Count == 0 ? null : LogSettings.Compile(string.Join('|', settings.KeepPatterns.Select(pattern => $"(?:{pattern})")));
        _livePath = livePath;
        _file = file;
        _writerLock = writerLock;
        _budgetFile = StepLogFiles.BudgetFile(Path.GetDirectoryName(livePath)!);
        _shownBefore = shownBefore;
        _whereLine = whereLine;
        _clock = clock;
        _budget = settings.JobLogBudgetBytes - NoticeReserve;
        _liveLimit = settings.JobLogBudgetBytes * 3 / 4;
        _sampleLimit = _liveLimit + (_budget - _liveLimit) / 2;
        _shown = shownBefore;
        _stdout = new OutputStream(this, jobStdout);
        _stderr = new OutputStream(this, jobStderr);
    }

    /// <summary>The step's stdout, as the stage hands it on: to the file, and to the job log's stdout as the budget allows.</summary>
    public Stream Stdout => _stdout;

    public Stream Stderr => _stderr;

    public string LivePath => _livePath;

    /// <param name="whereLine">How the job log names the whole log ("`gpu-executor logs 42` on host gpu-01"), in the notices.</param>
    public static StepOutputLog Start(LogSettings settings, string stateDir, long jobId, string stageName, Stream jobStdout, Stream jobStderr, string whereLine, TimeProvider? clock = null)
    {
        var directory = Directory.CreateDirectory(StepLogFiles.DirectoryOf(stateDir, jobId)).FullName;
        var order = StepLogFiles.Steps(directory).Count + 1;
        var livePath = Path.Combine(directory, $"{order:D2}-{StepLogFiles.SafeStepName(stageName)}{StepLogFiles.LiveSuffix}");
        var writerLock = HostLock.TryAcquire(StepLogFiles.WriterLock(livePath), create: true)
            ?? throw new IOException($"another process writes {livePath}");
        try
        {
            long shownBefore = 0;
            if (File.Exists(StepLogFiles.BudgetFile(directory)))
                long.TryParse(File.ReadAllText(StepLogFiles.BudgetFile(directory)).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out shownBefore);
            // Unbuffered: `gpu-executor logs --follow` reads what the step printed as soon as it did.
            var file = new FileStream(livePath, FileMode.Append, FileAccess.Write, FileShare.Read | FileShare.Delete, bufferSize: 0);
            return new StepOutputLog(settings, livePath, file, writerLock, shownBefore, jobStdout, jobStderr, whereLine, clock ?? TimeProvider.System);
        }
        catch
        {
            writerLock.Dispose();
            throw;
        }
    }

    private async Task WriteAsync(OutputStream stream, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            await WriteToFileAsync(data, cancellationToken);
            _bytes += data.Length;
            if (_bytes / CollectEveryBytes != (_bytes - data.Length) / CollectEveryBytes)
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            _lines += data.Span.Count((byte)'\n');
            if (!_throttled)
            {
                if (_shown + data.Length <= _liveLimit)
                {
                    await stream.PassOnAsync(data, cancellationToken);
                    return;
                }
                // The live part ends at the last whole line that fits.
                var room = (int)Math.Max(0, _liveLimit - _shown);
                var cut = data.Span[..room].LastIndexOf((byte)'\n') + 1;
                if (cut > 0)
                    await stream.PassOnAsync(data[..cut], cancellationToken);
                data = data[cut..];
                _throttled = true;
                _lastNotice = _clock.GetUtcNow();
                foreach (var each in new[] { _stdout, _stderr })
                    await each.EndLineShownAsync(cancellationToken);
                await NoticeAsync(
                    $"the job log has shown {Sizes.Describe(_shown)} of this job's output (logs.job_log_budget is {Sizes.Describe(_settings.JobLogBudgetBytes)}). " +
                    $"From here it shows 1 line in {_settings.SampleOneIn} and every line matching logs.keep_patterns; the whole log: {_whereLine}.", cancellationToken);
            }
            await ThrottleAsync(stream, data, cancellationToken);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The host file is a copy for later: a full or failing disk in state_dir stops it, says so at
    /// the end, and never stops the step or its job log.
    /// </summary>
    private async Task WriteToFileAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (_fileFailure is not null)
            return;
        try
        {
            await _file.WriteAsync(data, cancellationToken);
        }
        catch (IOException error)
        {
            _fileFailure = $"the host file stopped after {Sizes.Describe(_bytes)}: {error.Message}";
        }
    }

    private async Task ThrottleAsync(OutputStream stream, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            var newline = data.Span.IndexOf((byte)'\n');
            var segment = newline < 0 ? data : data[..(newline + 1)];
            stream.Line.Append(segment.Span);
            if (newline < 0)
                return;
            await EndLineAsync(stream, cancellationToken);
            data = data[(newline + 1)..];
        }
    }

    private async Task EndLineAsync(OutputStream stream, CancellationToken cancellationToken)
    {
        var line = stream.Line;
        _throttledLines++;
        // Sampled lines may take only the first half of what the live part left: the rest is
        // kept for the lines that match, which are why anyone reads a throttled log.
        var matches = _keep is not null && line.Matches(_keep);
        var keep = matches || _throttledLines % _settings.SampleOneIn == 0;
        if (keep && _shown + line.ShownLength <= (matches ? _budget : _sampleLimit))
        {
            await stream.PassOnAsync(line.Shown(), cancellationToken);
        }
        else
        {
            _heldLines++;
            _heldSinceNotice++;
            _heldBytes += line.Length;
            if (matches && !_spent)
            {
                _spent = true;
                await NoticeAsync($"the job log's budget is spent: it shows nothing more of this step's output; the whole log: {_whereLine}.", cancellationToken, fromReserve: true);
            }
        }
        line.Clear();
        if (!_spent && _heldSinceNotice > 0 && _clock.GetUtcNow() - _lastNotice >= _settings.HeldBackNoticeInterval)
        {
            await NoticeAsync($"{_heldLines.ToString("N0", CultureInfo.InvariantCulture)} lines ({Sizes.Describe(_heldBytes)}) held back so far; the whole log: {_whereLine}.", cancellationToken);
            _heldSinceNotice = 0;
        }
    }

    /// <summary>A line of the executor's own on the job log's stdout, between whole lines, paid from the budget.</summary>
    private async Task NoticeAsync(string text, CancellationToken cancellationToken, bool fromReserve = false)
    {
        _lastNotice = _clock.GetUtcNow();
        var bytes = Encoding.UTF8.GetBytes($"gpu-executor: {text}\n");
        if (_shown + bytes.Length > (fromReserve ? _settings.JobLogBudgetBytes : _budget))
            return;
        await _stdout.PassOnAsync(bytes, cancellationToken);
    }

    /// <summary>
    /// Ends the step: judges a last line without a newline, closes the file, compresses it (the
    /// live file goes once the compressed one is whole), and records what the job log showed.
    /// </summary>
    public async Task<StepLogSummary> FinishAsync()
    {
        if (_summary is not null)
            return _summary;
        await _gate.WaitAsync();
        try
        {
            if (_throttled)
            {
                foreach (var stream in new[] { _stdout, _stderr })
                {
                    if (stream.Line.Length > 0)
                    {
                        stream.Line.Append("\n"u8);
                        await EndLineAsync(stream, CancellationToken.None);
                    }
                }
            }
            var path = _livePath;
            try
            {
                await _file.DisposeAsync();
                // A file that stopped part way stays as it is: the disk that failed it would
                // likely fail its compressed copy too.
                if (_fileFailure is not null)
                    throw new IOException(_fileFailure);
                var compressed = StepLogFiles.CompressedOf(_livePath);
                var partial = compressed + ".tmp";
                try
                {
                    await using (var source = new FileStream(_livePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 1 << 16))
                    await using (var target = new FileStream(partial, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
                    await using (var gzip = new GZipStream(target, CompressionLevel.Fastest))
                        await source.CopyToAsync(gzip);
                }
                catch (IOException)
                {
                    // No room to compress: the live file stays, whole, and `logs` reads it as it is.
                    File.Delete(partial);
                    throw;
                }
                File.Move(partial, compressed, overwrite: true);
                File.Delete(_livePath);
                path = compressed;
                await File.WriteAllTextAsync(_budgetFile, _shown.ToString(CultureInfo.InvariantCulture));
            }
            catch (IOException error)
            {
                _fileFailure ??= $"the host file could not be finished: {error.Message}";
            }
            _summary = new StepLogSummary(path, _bytes, _lines, _shown - _shownBefore, _heldLines, _heldBytes, _fileFailure);
            return _summary;
        }
        finally
        {
            _writerLock.Dispose();
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_summary is null)
        {
            try
            {
                await FinishAsync();
            }
            catch (IOException)
            {
                // The live file stays; `logs` reads it as it is.
            }
        }
        _gate.Dispose();
    }

    /// <summary>
    /// The first bytes of the line being read, and its whole length. Judging a line allocates
    /// nothing: half a million lines a minute must not become half a million strings for the
    /// garbage collector, which let the process grow by 80 MiB over 50 MiB of output.
    /// </summary>
    private sealed class LineBuffer
    {
        private readonly byte[] _prefix = new byte[LinePrefixBytes];
        private readonly char[] _text = new char[LinePrefixBytes];
        private int _kept;

        public long Length { get; private set; }

        public void Append(ReadOnlySpan<byte> bytes)
        {
            var room = Math.Min(bytes.Length, _prefix.Length - _kept);
            bytes[..room].CopyTo(_prefix.AsSpan(_kept));
            _kept += room;
            Length += bytes.Length;
        }

        public bool Matches(Regex pattern) => pattern.IsMatch(_text.AsSpan(0, Encoding.UTF8.GetChars(_prefix, 0, _kept, _text, 0)));

        /// <summary>What <see cref="Shown"/> will take, without building it.</summary>
        public long ShownLength => Length <= _prefix.Length ? _kept : _kept + CutNote(Length - _kept).Length;

        private static byte[] CutNote(long cut) => Encoding.UTF8.GetBytes($" [gpu-executor: {cut} more bytes of this line cut]\n");

        /// <summary>The line as the job log shows it: whole, or its first 4 KiB and how much was cut.</summary>
        public ReadOnlyMemory<byte> Shown() => Length <= _prefix.Length
            ? _prefix.AsMemory(0, _kept).ToArray()
            : [.. _prefix.AsSpan(0, _kept), .. CutNote(Length - _kept)];

        public void Clear()
        {
            _kept = 0;
            Length = 0;
        }
    }

    /// <summary>One of the step's two streams: what it passes on, and the line it is in the middle of.</summary>
    private sealed class OutputStream(StepOutputLog owner, Stream jobLog) : Stream
    {
        private bool _atLineStart = true;

        public LineBuffer Line { get; } = new();

        public async Task PassOnAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            if (data.IsEmpty)
                return;
            await jobLog.WriteAsync(data, cancellationToken);
            owner._shown += data.Length;
            _atLineStart = data.Span[^1] == (byte)'\n';
        }

        /// <summary>Where the live part stopped in the middle of this stream's line: the job log's line ends there, and the rest is judged as a line of its own.</summary>
        public Task EndLineShownAsync(CancellationToken cancellationToken) => _atLineStart ? Task.CompletedTask : PassOnAsync("\n"u8.ToArray(), cancellationToken);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => new(owner.WriteAsync(this, buffer, cancellationToken));

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => owner.WriteAsync(this, buffer.AsMemory(offset, count), cancellationToken);

        public override void Write(byte[] buffer, int offset, int count) => owner.WriteAsync(this, buffer.AsMemory(offset, count), CancellationToken.None).GetAwaiter().GetResult();

        public override Task FlushAsync(CancellationToken cancellationToken) => jobLog.FlushAsync(cancellationToken);

        public override void Flush() => jobLog.Flush();

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
