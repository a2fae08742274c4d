using System.Text;

namespace GpuExecutor.Simulation;

/// <summary>
/// Writes stage scripts in the shape gitlab-runner's bash shell gives them (docs/runner-protocol.md, "What
/// the script looks like"): a TERM trap, errexit/pipefail, and the body in a subshell as
/// eval $'…' with stdin from /dev/null, exporting every job variable first.
/// </summary>
public static class RunnerScriptBuilder
{
    public static string Build(IEnumerable<KeyValuePair<string, string>> variables, string workingDirectory, IEnumerable<string> bodyLines)
    {
        var body = new StringBuilder();
        foreach (var (key, value) in variables)
            body.Append("export ").Append(key).Append('=').Append(BashQuoting.AnsiC(value)).Append('\n');
        body.Append("mkdir -p ").Append(BashQuoting.AnsiC(workingDirectory)).Append('\n');
        body.Append("cd ").Append(BashQuoting.AnsiC(workingDirectory)).Append('\n');
        foreach (var line in bodyLines)
            body.Append(line).Append('\n');

        var script = new StringBuilder();
        script.Append("#!/usr/bin/env bash\n\n");
        script.Append("trap 'exit 1' TERM\n\n");
        script.Append("set -eo pipefail\n");
        script.Append("set +o noclobber\n");
        script.Append("(trap 'exit 1' TERM; eval ").Append(BashQuoting.AnsiC(body.ToString())).Append(") < /dev/null\n");
        script.Append("exit 0\n");
        return script.ToString();
    }

    /// <summary>A user command the way the runner shows and runs it: echoed in green, then run.</summary>
    public static IEnumerable<string> UserCommands(IEnumerable<string> commands)
    {
        foreach (var command in commands)
        {
            yield return "echo " + BashQuoting.AnsiC($"\u001b[32;1m$ {command}\u001b[0;m");
            yield return command;
        }
    }

    /// <summary>
    /// get_sources without a git server: the files of a local directory, written by the script
    /// itself with printf, so the helper image needs nothing but bash (no tar, no base64).
    /// </summary>
    public static IEnumerable<string> PlaceSources(string? sourceDirectory)
    {
        // Names the container it runs in, so tests can tell the helper from the job container.
        yield return "echo \"Fetching changes (simulated) in ${HOSTNAME}...\"";
        if (sourceDirectory is null)
            yield break;
        var root = Path.GetFullPath(sourceDirectory);
        foreach (var file in Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(root, file);
            var directory = Path.GetDirectoryName(relative);
            if (!string.IsNullOrEmpty(directory))
                yield return "mkdir -p " + BashQuoting.AnsiC(directory);
            yield return "printf '%s' " + BashQuoting.AnsiC(File.ReadAllText(file)) + " > " + BashQuoting.AnsiC(relative);
            if ((File.GetUnixFileMode(file) & UnixFileMode.UserExecute) != 0)
                yield return "chmod +x " + BashQuoting.AnsiC(relative);
        }
    }
}
