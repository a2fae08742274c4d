namespace GpuExecutor.JobLog;

/// <summary>
/// A collapsible section in the GitLab job log. GitLab recognises these markers in any output
/// that reaches the log (docs/runner-protocol.md, "Collapsible log sections"); elsewhere they are harmless.
/// </summary>
public sealed class JobLogSection : IDisposable
{
    private readonly TextWriter _log;
    private readonly string _name;

    private JobLogSection(TextWriter log, string name, string header, bool collapsed)
    {
        _log = log;
        _name = name;
        var options = collapsed ? "[collapsed=true]" : "";
        _log.WriteLine($"\u001b[0Ksection_start:{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}:{name}{options}\r\u001b[0K\u001b[36;1m{header}\u001b[0;m");
    }

    /// <param name="name">Letters, digits, '_' and '-' only; GitLab ignores sections with other names.</param>
    public static JobLogSection Start(TextWriter log, string name, string header, bool collapsed = false) =>
        new(log, name, header, collapsed);

    public void Dispose() =>
        _log.WriteLine($"\u001b[0Ksection_end:{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}:{_name}\r\u001b[0K");
}
