using System.Text;

namespace GpuExecutor.Simulation;

/// <summary>
/// Bash ANSI-C quoting ($'…'), as gitlab-runner's bash shell writer uses it: every byte of the
/// value survives, and nothing inside is expanded, whatever quotes, $(…), backticks or newlines
/// it holds.
/// </summary>
public static class BashQuoting
{
    public static string AnsiC(string value)
    {
        var quoted = new StringBuilder(value.Length + 8);
        quoted.Append("$'");
        foreach (var c in value)
        {
            switch (c)
            {
                case '\\': quoted.Append(@"\\"); break;
                case '\'': quoted.Append(@"\'"); break;
                case '\n': quoted.Append(@"\n"); break;
                case '\r': quoted.Append(@"\r"); break;
                case '\t': quoted.Append(@"\t"); break;
                case < ' ' or '\u007f': quoted.Append($"\\x{(int)c:x2}"); break;
                default: quoted.Append(c); break;
            }
        }
        quoted.Append('\'');
        return quoted.ToString();
    }
}
