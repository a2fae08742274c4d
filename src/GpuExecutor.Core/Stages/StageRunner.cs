using System.Buffers;
using System.Collections.Concurrent;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Outcomes;
using Polly;
using Polly.Retry;
using Polly.Timeout;

namespace GpuExecutor.Stages;

/// <summary>How a stage ended.</summary>
/// <param name="ExitCode">The script's own exit code, as bash reported it.</param>
/// <param name="Stopped">True when a stop (cancel, timeout, shutdown, or the deadline's signal) ended it.</param>
/// <param name="Killed">True when the stop had to SIGKILL processes that outlived the grace period.</param>
/// <param name="StoppedFromOutside">The container itself was being stopped while the stage ran (docker stop, a daemon without live-restore shutting down): the exit code is the stop's, not the job's.</param>
public sealed record StageResult(int ExitCode, bool Stopped, bool Killed = false, bool StoppedFromOutside = false)
{
    /// <summary>
    /// A signal killed the stage's wrapper in the stage server before it could reply (the job
    /// signalled every process in its container, as `kill -9 -1` does): the exit code is the
    /// wrapper's (128 + the signal), not the script's, which is lost.
    /// </summary>
    public bool WrapperKilled { get; init; }
}

/// <summary>
/// Runs one stage script in a job container through its <see cref="StageServer"/>, streams the
/// output live, and stops the stage on request through the one <see cref="StopSequence"/>: a
/// stop (the runner's SIGTERM) and the signal before the job's deadline take the same path.
/// </summary>
public sealed class StageRunner(IContainerDriver driver, RunSettings settings, Action<string> log, Action? beforeKill = null)
{
    private static readonly TimeSpan AttachTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How often the stage's wrapper is checked for having been killed before its reply.</summary>
    private static readonly TimeSpan WrapperCheckInterval = TimeSpan.FromSeconds(3);

    /// <summary>How often a followed stage is checked for having ended unseen.</summary>
    private static readonly TimeSpan FollowCheckInterval = TimeSpan.FromSeconds(2);

    private enum StopCause { Stop, Deadline }

    public async Task<StageResult> RunAsync(
        string container,
        ReadOnlyMemory<byte> script,
        Stream stdout,
        Stream stderr,
        CancellationToken stopRequested,
        CancellationToken signalRequested = default,
        string? nonce = null,
        bool follow = false)
    {
        // The container's log from this moment on holds all that the attach below delivers: after
        // a daemon restart, the stage's output is read from there, past what was already shown.
        var since = DateTimeOffset.UtcNow;
        using var attachTimeout = new CancellationTokenSource(AttachTimeout);
        var stageNonce = nonce ?? StageServer.NewNonce();
        using var session = new ServerSession(await driver.AttachAsync(container, attachTimeout.Token), container, StageServer.ContainerStopNonce(stageNonce), () =>
            log($"The container {container} itself is being stopped (docker stop, or a Docker daemon without live-restore shutting down): its stage got SIGTERM, so the trainer can save; SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left."));
        var reconnection = new DaemonReconnection(driver, container, since, settings.DaemonReconnectWait, log);
        // Docker accepts an attach to a stopped container and then sends nothing, ever. A wait
        // on the container, started after attaching, ends the stage instead: at once if the
        // container is already stopped, and whenever it stops.
        using var stopWatching = new CancellationTokenSource();
        var containerStopped = WatchForStopAsync(container, reconnection, stopWatching.Token);

        // The stage has ended once its reply came on both streams: each stream is ordered, the
        // two are not, so stderr written just before the end may arrive after stdout's reply.
        var stdoutReply = session.Expect(stageNonce);
        var stage = BothAsync(stdoutReply, session.ExpectOnStderr(stageNonce));
        // Following a stage another `run` started (re-attach): it is running already, and only
        // its output from now on, and its reply, come this way.
        if (!follow)
            await session.WriteAsync(StageServer.RunRequest(stageNonce, script.Span), attachTimeout.Token);

        using var stopReading = new CancellationTokenSource();
        var reading = session.ReadAsync(stdout, stderr, reconnection, stopReading.Token);
        if (follow)
            stage = FollowedAsync(session, stage);
        // Either of these ending first is the outcome: the stream failed, or the container stopped.
        var failure = Task.WhenAny(reading, containerStopped).Unwrap();
        using var stopChecking = new CancellationTokenSource();
        var wrapperKilled = WatchTheWrapperAsync(session, stageNonce, stdoutReply, stopChecking.Token);
        try
        {
            // Whichever comes first starts the stop; the other then changes nothing, so a trainer
            // is never signalled twice (the deadline's signal and the runner's timeout can meet).
            var stop = new TaskCompletionSource<StopCause>(TaskCreationOptions.RunContinuationsAsynchronously);
            await using (signalRequested.Register(() => stop.TrySetResult(StopCause.Deadline)))
            await using (stopRequested.Register(() => stop.TrySetResult(StopCause.Stop)))
            {
                await Task.WhenAny(stage, failure, stop.Task, wrapperKilled);
            }
            if (stage.IsCompleted && !stop.Task.IsCompleted)
                return new StageResult(await stage, Stopped: false, StoppedFromOutside: session.ContainerStopAnnounced);
            if (failure.IsCompleted)
                await failure;
            if (wrapperKilled.IsCompletedSuccessfully && !stop.Task.IsCompleted)
            {
                var status = await wrapperKilled;
                log($"Signal {status - StageServer.KilledBySignal} killed the stage server's wrapper of this stage in {container} before the stage ended: the job's script signalled every process in its container (as `kill -9 -1` does). The stage's exit code is lost; its remaining processes get SIG{settings.StopSignal}, and SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left.");
                session.ArmNoticeFilter();
                var orphaned = await new StopSequence(settings.StopSignal, settings.StopGracePeriod, log, beforeKill).RunAsync(new OrphanedStageProcesses(session, stageNonce, status, failure, log));
                return new StageResult(status, Stopped: false, orphaned.Killed) { WrapperKilled = true };
            }

            log(await stop.Task == StopCause.Deadline
                ? $"The job's deadline is near: sending SIG{settings.StopSignal} to the stage's processes in {container} so the trainer can checkpoint before the runner stops the job; SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left."
                : $"Stop requested: sending SIG{settings.StopSignal} to the stage's processes in {container}, SIGKILL in {settings.StopGracePeriod.TotalSeconds:0} s if any is left.");
            // From here on, bash's "Terminated" notices are the stop's echo, not the job's news.
            session.ArmNoticeFilter();
            var sequence = new StopSequence(settings.StopSignal, settings.StopGracePeriod, log, beforeKill);
            var outcome = await sequence.RunAsync(new StageProcesses(session, stageNonce, stage, failure, log));
            return new StageResult(outcome.ExitCode, Stopped: true, outcome.Killed, session.ContainerStopAnnounced);
        }
        finally
        {
            await stopChecking.CancelAsync();
            await wrapperKilled.ContinueWith(_ => { }, TaskScheduler.Default);
            await stopReading.CancelAsync();
            await stopWatching.CancelAsync();
            await Task.WhenAll(reading, containerStopped).ContinueWith(_ => { }, TaskScheduler.Default);
            await session.FlushAsync(stderr);
        }
    }

    /// <summary>
    /// A followed stage may have ended before this attach began, its reply then gone with no
    /// reader: when no process but the server's is left and no reply came, the stage is over
    /// and its exit code lost.
    /// </summary>
    private static async Task<int> FollowedAsync(ServerSession session, Task<int> stage)
    {
        while (await Task.WhenAny(stage, Task.Delay(FollowCheckInterval)) != stage)
        {
            if (await session.CountSurvivorsAsync(_ => { }) == 0 && await Task.WhenAny(stage, Task.Delay(TimeSpan.FromSeconds(2))) != stage)
                throw new SystemFailureException($"the stage followed in container '{session.Container}' ended before it could be followed, and its exit code with it (it is in the container's log).");
        }
        return await stage;
    }

    /// <summary>
    /// Completes, with the wrapper's exit status, only if a signal killed the stage's wrapper
    /// before it replied; else runs until cancelled. The wrapper prints its stdout reply last, on
    /// the same stream as the `status` reply, so a reply it gave is always seen first. A server
    /// from before `status` never answers, is never taken for a killed one, and is asked once.
    /// </summary>
    private static async Task<int> WatchTheWrapperAsync(ServerSession session, string stageNonce, Task<int> stdoutReply, CancellationToken cancellationToken)
    {
        while (true)
        {
            await Task.WhenAny(stdoutReply, Task.Delay(WrapperCheckInterval, cancellationToken));
            cancellationToken.ThrowIfCancellationRequested();
            if (stdoutReply.IsCompleted)
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            var status = await session.AskWrapperStatusAsync(stageNonce, cancellationToken);
            if (status is null)
            {
                // No answer: a server from before `status` (a container an older executor made),
                // or one too busy to answer. Asking on could only fill the job log with late replies.
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            if (status is >= StageServer.KilledBySignal and < StageServer.WrapperRunning && !stdoutReply.IsCompleted)
                return status.Value;
        }
    }

    private static async Task<int> BothAsync(Task<int> stdoutReply, Task<int> stderrReply)
    {
        await stderrReply;
        return await stdoutReply;
    }

    /// <summary>
    /// Never completes successfully: it throws once the container is not running. A wait cut off
    /// by the daemon (a restart) is not a stop: it waits again once the daemon is back.
    /// </summary>
    private async Task WatchForStopAsync(string container, DaemonReconnection reconnection, CancellationToken cancellationToken)
    {
        while (true)
        {
            ContainerEngineException stopped;
            try
            {
                var exitCode = await driver.WaitUntilStoppedAsync(container, cancellationToken);
                stopped = new ContainerEngineException($"container '{container}' is not running (its main process exited with {exitCode}{(exitCode == 0 ? ": it was stopped, by `docker stop` or a daemon shutting down" : "")}), so the stage cannot run or finish.");
            }
            catch (ContainerEngineException error) when (error is not ContainerNotFoundException)
            {
                stopped = error;
            }
            if (!reconnection.Enabled || cancellationToken.IsCancellationRequested)
                throw stopped;
            // A daemon going down without live-restore stops its containers first: the wait ends
            // as for any stop, and only a look at the daemon tells the two apart.
            await reconnection.EnsureStillRunningAsync(stopped, cancellationToken);
        }
    }

    /// <summary>
    /// A daemon restart under a running stage. With live-restore the container, and the stage in
    /// it, go on; its output waits in the container's pipe and then in its log. So `run` waits,
    /// with a bound, for the daemon to answer, attaches again for its requests, and reads the
    /// stage's output from the log from the stage's start, past what it already passed on.
    /// Without live-restore the container did not survive, and the job fails saying so.
    /// </summary>
    private sealed class DaemonReconnection(IContainerDriver driver, string container, DateTimeOffset since, TimeSpan wait, Action<string> log)
    {
        /// <summary>A daemon shutting down exits within a second of stopping its last container (measured: 50 ms).</summary>
        private static readonly TimeSpan ShutdownProbeDelay = TimeSpan.FromSeconds(3);

        private volatile bool _daemonWasDown;
        private int _announced;

        public bool Enabled => wait > TimeSpan.Zero;

        /// <summary>Returns once the daemon answers and the container still runs; throws otherwise, or when the wait runs out.</summary>
        public async Task EnsureStillRunningAsync(Exception cause, CancellationToken cancellationToken)
        {
            var state = await UntilTheDaemonAnswersAsync(token => driver.InspectStateAsync(container, token), cancellationToken);
            if (state is { Running: true })
                return;
            if (!_daemonWasDown)
            {
                // Stopped while the daemon still answers: by hand, or by a daemon about to exit.
                await Task.Delay(ShutdownProbeDelay, cancellationToken);
                state = await UntilTheDaemonAnswersAsync(token => driver.InspectStateAsync(container, token), cancellationToken);
            }
            if (_daemonWasDown)
                throw new SystemFailureException(
                    $"the Docker daemon went away and came back, and container '{container}' did not survive it ({(state is null ? "it is gone" : $"its main process exited with {state.ExitCode}")}): " +
                    "without live-restore a daemon restart stops every container. The job's retry resumes from the newest checkpoint.", cause);
            // The daemon never left: the container stopped by itself, and the failure is as it came.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
        }

        /// <summary>Attaches again, and gives <paramref name="session"/> the container's log from the stage's start to read on from.</summary>
        public async Task ResumeAsync(ServerSession session, Exception cause, CancellationToken cancellationToken)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await EnsureStillRunningAsync(cause, cancellationToken);
            var (replayFrom, exact) = session.ReplayPoint(since);
            var (attachment, output) = await UntilTheDaemonAnswersAsync(async token =>
            {
                var attachment = await driver.AttachAsync(container, token);
                try
                {
                    return (attachment, await driver.ReadLogAsync(container, replayFrom, follow: true, token));
                }
                catch
                {
                    attachment.Dispose();
                    throw;
                }
            }, cancellationToken);
            session.Resume(attachment, output, exact);
            if (!exact)
                log($"(The stage printed more than {ServerSession.ExactReplayLimit >> 20} MiB before the gap, more than the container's log surely keeps: output from the last {ServerSession.ReplayOverlap.TotalSeconds:0} s before the gap may show twice.)");
            log(_daemonWasDown
                ? $"The Docker daemon answers again after {clock.Elapsed.TotalSeconds:0} s and {container} is still running (live-restore): following the stage again; what it printed meanwhile comes from the container's log."
                : $"The connection to the Docker daemon broke ({cause.Message}); {container} is still running: following the stage again from the container's log.");
            Interlocked.Exchange(ref _announced, 0);
        }

        /// <summary>Calls <paramref name="call"/> until the daemon answers it, with backoff, for at most the reconnect wait.</summary>
        private async Task<T> UntilTheDaemonAnswersAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
        {
            var pipeline = new ResiliencePipelineBuilder()
                .AddTimeout(wait)
                .AddRetry(new RetryStrategyOptions
                {
                    ShouldHandle = new PredicateBuilder().Handle<ContainerEngineException>(error => error is not ContainerNotFoundException),
                    MaxRetryAttempts = int.MaxValue,
                    BackoffType = DelayBackoffType.Exponential,
                    Delay = TimeSpan.FromMilliseconds(250),
                    MaxDelay = TimeSpan.FromSeconds(5),
                    OnRetry = arguments =>
                    {
                        _daemonWasDown = true;
                        if (Interlocked.Exchange(ref _announced, 1) == 0)
                            log($"The Docker daemon does not answer ({arguments.Outcome.Exception?.Message}); the stage goes on in {container} if the daemon keeps containers running (live-restore). Waiting up to {wait.TotalSeconds:0} s for the daemon to come back (run.daemon_reconnect_seconds)...");
                        return ValueTask.CompletedTask;
                    },
                })
                .Build();
            try
            {
                return await pipeline.ExecuteAsync(async token => await call(token), cancellationToken);
            }
            catch (TimeoutRejectedException error)
            {
                throw new SystemFailureException(
                    $"the Docker daemon did not answer for {wait.TotalSeconds:0} s (run.daemon_reconnect_seconds), so the stage in {container} could not be followed to its end. " +
                    "If the container still runs once the daemon is back, the job's retry adopts its training; if not, it resumes from the newest checkpoint.", error);
            }
        }
    }

    /// <summary>The stage as the stop sequence sees it, through the stage server.</summary>
    private sealed class StageProcesses(ServerSession session, string stageNonce, Task<int> stage, Task failure, Action<string> log) : IStageProcesses
    {
        public Task SignalAsync(string signal) => session.SendAsync(StageServer.SignalRequest(stageNonce, signal), log);

        public async Task<bool> AllExitedAsync() => stage.IsCompleted && await session.CountSurvivorsAsync(log) == 0;

        public async Task PauseAsync(TimeSpan wait)
        {
            await Task.WhenAny(stage, failure, Task.Delay(wait));
            if (failure.IsCompleted)
                await failure;
        }

        public async Task<int> ExitCodeAsync(TimeSpan wait)
        {
            if (await Task.WhenAny(stage, failure, Task.Delay(wait)) != stage)
            {
                if (failure.IsCompleted)
                    await failure;
                throw new SystemFailureException($"the stage in container '{session.Container}' did not end {wait.TotalSeconds:0} s after SIGKILL.");
            }
            return await stage;
        }
    }

    /// <summary>
    /// A stage whose wrapper was killed: no reply will come, so the stage is over when none of its
    /// processes is left, and its exit code is the wrapper's.
    /// </summary>
    private sealed class OrphanedStageProcesses(ServerSession session, string stageNonce, int wrapperStatus, Task failure, Action<string> log) : IStageProcesses
    {
        public Task SignalAsync(string signal) => session.SendAsync(StageServer.SignalRequest(stageNonce, signal), log);

        public async Task<bool> AllExitedAsync() => await session.CountSurvivorsAsync(log) == 0;

        public async Task PauseAsync(TimeSpan wait)
        {
            await Task.WhenAny(failure, Task.Delay(wait));
            if (failure.IsCompleted)
                await failure;
        }

        public Task<int> ExitCodeAsync(TimeSpan wait) => Task.FromResult(wrapperStatus);
    }

    /// <summary>
    /// The conversation with the stage server: requests out through the attachment, output and
    /// replies in, from the attachment, or after a daemon restart from the container's log.
    /// </summary>
    /// <param name="containerStopNonce">What the stage server says in the place of a nonce when the container itself is being stopped under this stage.</param>
    /// <param name="containerStopping">Called when it says so.</param>
    private sealed class ServerSession(IContainerAttachment attachment, string container, string containerStopNonce, Action containerStopping) : IDisposable
    {
        private IContainerAttachment _attachment = attachment;
        private IContainerOutput _output = attachment;

        /// <summary>
        /// Up to this much output since the stage's start, a resumed log is replayed from the
        /// start and cut exactly where the attachment stopped. The container's log keeps 2 × 64
        /// MiB (DockerSpecConverter): past this, its start may be gone, and counting from it
        /// would drop new output instead.
        /// </summary>
        public const long ExactReplayLimit = 32L << 20;

        /// <summary>Past the limit, the log is replayed from this long before the last output received: some lines may repeat, none is lost.</summary>
        public static readonly TimeSpan ReplayOverlap = TimeSpan.FromSeconds(2);

        /// <summary>Bytes of stdout [0] and stderr [1] passed on since the stage's start, and those a resumed log must drop first.</summary>
        private readonly long[] _delivered = new long[2];
        private readonly long[] _toSkip = new long[2];
        private DateTimeOffset _lastOutputAt = DateTimeOffset.UtcNow;

        /// <summary>Where a resumed log starts, and whether what was passed on can be cut from it exactly.</summary>
        public (DateTimeOffset Since, bool Exact) ReplayPoint(DateTimeOffset stageStart) =>
            _delivered[0] + _delivered[1] <= ExactReplayLimit ? (stageStart, true) : (_lastOutputAt - ReplayOverlap, false);

        private readonly ConcurrentDictionary<string, TaskCompletionSource<int>> _pending = new();
        private readonly ConcurrentDictionary<string, TaskCompletionSource<int>> _pendingOnStderr = new();
        private readonly SignalNoticeFilter _stderrNotices = new();
        private readonly Lock _stderrLock = new();

        public string Container => container;

        /// <summary>The stage server said the container itself is being stopped.</summary>
        public bool ContainerStopAnnounced => Volatile.Read(ref _containerStopAnnounced);

        private bool _containerStopAnnounced;

        public Task<int> Expect(string nonce) => Register(_pending, nonce);

        public Task<int> ExpectOnStderr(string nonce) => Register(_pendingOnStderr, nonce);

        private static Task<int> Register(ConcurrentDictionary<string, TaskCompletionSource<int>> pending, string nonce)
        {
            var reply = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            pending[nonce] = reply;
            return reply.Task;
        }

        /// <summary>Requests go out whole, one at a time: the wrapper check and a stop may both be writing.</summary>
        private readonly SemaphoreSlim _writing = new(1, 1);

        public async Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            await _writing.WaitAsync(cancellationToken);
            try
            {
                await Volatile.Read(ref _attachment).WriteAsync(data, cancellationToken);
            }
            finally
            {
                _writing.Release();
            }
        }

        /// <summary>
        /// After a reconnect: requests go through <paramref name="attachment"/>, and output comes
        /// from <paramref name="log"/>, which starts where the stage started: what was already
        /// passed on is dropped from it, byte for byte, so nothing is shown twice.
        /// </summary>
        public void Resume(IContainerAttachment attachment, IContainerOutput log, bool exact)
        {
            var oldAttachment = Interlocked.Exchange(ref _attachment, attachment);
            var oldOutput = Interlocked.Exchange(ref _output, log);
            if (exact)
                Array.Copy(_delivered, _toSkip, 2);
            else
            {
                // Counted from the stage's start no more: the replay begins mid-stream.
                Array.Clear(_toSkip);
                _delivered[0] = _delivered[1] = ExactReplayLimit + 1;
            }
            oldAttachment.Dispose();
            if (!ReferenceEquals(oldOutput, oldAttachment))
                oldOutput.Dispose();
        }

        public void Dispose()
        {
            _writing.Dispose();
            _attachment.Dispose();
            if (!ReferenceEquals(_output, _attachment))
                _output.Dispose();
        }

        public async Task SendAsync(byte[] request, Action<string> log)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await WriteAsync(request, timeout.Token);
            }
            catch (Exception error) when (error is ContainerEngineException or OperationCanceledException)
            {
                // A container that is gone has no processes left to stop.
                log($"Could not reach the stage server in {container}: {error.Message}");
            }
        }

        public void ArmNoticeFilter()
        {
            lock (_stderrLock)
                _stderrNotices.Arm();
        }

        /// <summary>Once reading has stopped: what the notice filter still holds (a partial line) goes out.</summary>
        public async Task FlushAsync(Stream stderr)
        {
            var held = new ArrayBufferWriter<byte>();
            lock (_stderrLock)
                _stderrNotices.Flush(held);
            if (held.WrittenCount > 0)
                await stderr.WriteAsync(held.WrittenMemory);
        }

        /// <summary>
        /// The `status` of the stage's wrapper; null when no answer comes in time. Every ask of a
        /// stage uses one nonce (<see cref="StageServer.StatusNonce"/>), expected for as long as
        /// the session lasts: a late answer, or one replayed from the container's log after a
        /// daemon restart, is taken out of the output like any other, never shown. Such a stale
        /// answer can only say "running": a killed wrapper is reported once, at the end.
        /// </summary>
        public async Task<int?> AskWrapperStatusAsync(string stageNonce, CancellationToken cancellationToken)
        {
            var nonce = StageServer.StatusNonce(stageNonce);
            var reply = Expect(nonce);
            await SendAsync(StageServer.StatusRequest(nonce, stageNonce), _ => { });
            var answered = await Task.WhenAny(reply, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken));
            return answered == reply ? await reply : null;
        }

        /// <summary>How many processes besides the server's own are alive; unknown counts as some.</summary>
        public async Task<int> CountSurvivorsAsync(Action<string> log)
        {
            var nonce = StageServer.NewNonce();
            var reply = Expect(nonce);
            await SendAsync(StageServer.CountRequest(nonce), log);
            var answered = await Task.WhenAny(reply, Task.Delay(TimeSpan.FromSeconds(5)));
            _pending.TryRemove(nonce, out _);
            return answered == reply ? await reply : int.MaxValue;
        }

        /// <summary>
        /// Streams output until cancelled; ends with an error when the container's streams close
        /// and <paramref name="reconnection"/> cannot bring them back.
        /// </summary>
        public async Task ReadAsync(Stream stdout, Stream stderr, DaemonReconnection reconnection, CancellationToken cancellationToken)
        {
            var stdoutScanner = new ServerReplyScanner(_pending.ContainsKey);
            var stderrScanner = new ServerReplyScanner(nonce => nonce == containerStopNonce || _pendingOnStderr.ContainsKey(nonce));
            var buffer = new byte[81920];
            var passThrough = new ArrayBufferWriter<byte>(buffer.Length);
            var filtered = new ArrayBufferWriter<byte>(buffer.Length);
            var replies = new List<ServerReply>();
            while (true)
            {
                AttachmentChunk chunk;
                try
                {
                    chunk = await Volatile.Read(ref _output).ReadAsync(buffer, cancellationToken);
                    if (chunk.EndOfStream)
                        throw new ContainerEngineException($"container '{container}' closed its output before the stage ended (the container stopped or was removed).");
                }
                catch (ContainerEngineException error) when (reconnection.Enabled && !cancellationToken.IsCancellationRequested)
                {
                    await reconnection.ResumeAsync(this, error, cancellationToken);
                    continue;
                }

                _lastOutputAt = DateTimeOffset.UtcNow;
                var stream = chunk.IsStderr ? 1 : 0;
                var skipped = (int)Math.Min(_toSkip[stream], chunk.Count);
                _toSkip[stream] -= skipped;
                if (skipped == chunk.Count)
                    continue;
                _delivered[stream] += chunk.Count - skipped;
                var (scanner, output, pending) = chunk.IsStderr ? (stderrScanner, stderr, _pendingOnStderr) : (stdoutScanner, stdout, _pending);
                passThrough.ResetWrittenCount();
                replies.Clear();
                scanner.Feed(buffer.AsSpan(skipped, chunk.Count - skipped), passThrough, replies);
                if (chunk.IsStderr && passThrough.WrittenCount > 0)
                {
                    filtered.ResetWrittenCount();
                    lock (_stderrLock)
                    {
                        // What came after the server's word that the container is stopping is the stop's echo.
                        var stopsAt = replies.FirstOrDefault(reply => reply.Nonce == containerStopNonce) is { Nonce: not null } stopping ? stopping.OutputOffset : passThrough.WrittenCount;
                        _stderrNotices.Feed(passThrough.WrittenSpan[..stopsAt], filtered);
                        if (stopsAt < passThrough.WrittenCount)
                        {
                            _stderrNotices.Arm();
                            _stderrNotices.Feed(passThrough.WrittenSpan[stopsAt..], filtered);
                        }
                    }
                    if (filtered.WrittenCount > 0)
                        await output.WriteAsync(filtered.WrittenMemory, cancellationToken);
                }
                else if (passThrough.WrittenCount > 0)
                    await output.WriteAsync(passThrough.WrittenMemory, cancellationToken);
                foreach (var reply in replies)
                {
                    if (chunk.IsStderr && reply.Nonce == containerStopNonce)
                    {
                        lock (_stderrLock)
                            _stderrNotices.Arm();
                        Volatile.Write(ref _containerStopAnnounced, true);
                        containerStopping();
                    }
                    else if (pending.TryGetValue(reply.Nonce, out var waiting))
                        waiting.TrySetResult(reply.Value);
                }
            }
        }
    }
}
